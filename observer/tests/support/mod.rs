//! Test support: real interpreters, real workloads, the real gilwatch binary.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const GILWATCH: &str = env!("CARGO_BIN_EXE_gilwatch");

pub fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/workloads")
        .join(name)
}

pub fn require_root() {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "privileged tests load eBPF programs: run them as root (cargo xtask test)"
    );
}

/// Under `cargo xtask test` (which sets GILWATCH_REQUIRE_FIXTURES) every fixture must be there.
pub fn fixtures_required() -> bool {
    std::env::var_os("GILWATCH_REQUIRE_FIXTURES").is_some_and(|v| v != "0" && !v.is_empty())
}

/// A fixture is missing: a failure under `cargo xtask test`, a skip (said out loud) otherwise.
pub fn missing_fixture(what: &str) {
    assert!(
        !fixtures_required(),
        "{what} is missing (`cargo xtask setup` and `cargo xtask test` provide it)"
    );
    eprintln!("note: {what} is missing, skipping it");
}

/// The pyenv builds the tests expect (test-targets: 3.6–3.13 with `--enable-shared`).
const PYENV_MINORS: std::ops::RangeInclusive<u32> = 6..=13;

/// Where the Debian sid root with python3.13/3.14/3.15 lives (made by `cargo xtask test`).
pub const SID_ROOT: &str = "/var/lib/gilwatch-test/sid";

/// How a case runs its interpreter.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// The interpreter on the host.
    Host,
    /// Inside the sid root, in its own mount and PID namespaces (a container): the path does
    /// not exist on the host and the interpreter is PID 1 of its namespace.
    Container,
}

/// One interpreter to test, and how gilwatch should probe it.
#[derive(Debug, Clone)]
pub struct Python {
    pub version: (u32, u32),
    pub label: String,
    /// The interpreter's path (inside the sid root for containers).
    pub exe: PathBuf,
    pub launcher: Launcher,
    /// The --strategy gilwatch is given (`auto` lets it choose).
    pub strategy: &'static str,
    /// What gilwatch should end up using.
    pub expect_strategy: &'static str,
}

impl Python {
    /// The gilwatch arguments for this case's strategy.
    pub fn strategy_args(&self) -> [&str; 2] {
        ["--strategy", self.strategy]
    }
}

/// Every pyenv CPython 3.6–3.13 on this machine, oldest first. The tests require at least one:
/// a machine without them could not test anything real.
pub fn pythons() -> Vec<Python> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
    {
        let label = entry.file_name().to_string_lossy().into_owned();
        let mut parts = label.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
            continue;
        };
        if major != 3 || !PYENV_MINORS.contains(&minor) {
            continue;
        }
        let exe = entry.path().join(format!("bin/python{major}.{minor}"));
        if exe.exists() {
            out.push(Python {
                version: (major, minor),
                label,
                exe,
                launcher: Launcher::Host,
                strategy: "auto",
                expect_strategy: "symtab",
            });
        }
    }
    out.sort_by_key(|p| p.version);
    assert!(
        !out.is_empty(),
        "no pyenv CPython under /root/.pyenv/versions"
    );
    for minor in PYENV_MINORS {
        if !out.iter().any(|p| p.version == (3, minor)) {
            missing_fixture(&format!("pyenv CPython 3.{minor}"));
        }
    }
    out
}

/// The pyenv interpreters again, with the symbol-free strategy forced (3.8+: it needs
/// `_PyRuntime` to find the GIL).
pub fn pythons_libc() -> Vec<Python> {
    pythons()
        .into_iter()
        .filter(|p| p.version >= (3, 8))
        .map(|p| Python {
            label: format!("{} libc", p.label),
            strategy: "libc",
            expect_strategy: "libc",
            ..p
        })
        .collect()
}

/// Interpreters as distributions ship them: stripped, PGO+LTO, statically linked. Debian's own
/// /usr/bin/python3.11 on the host, and sid's 3.13/3.14/3.15 each in a container. All must be
/// probed without symbols: `auto` finds take_gil by disassembly (the `exports` strategy).
pub fn distro_pythons() -> Vec<Python> {
    let mut out = Vec::new();
    if !Path::new("/usr/bin/python3.11").exists() {
        missing_fixture("Debian's /usr/bin/python3.11");
    } else {
        out.push(Python {
            version: (3, 11),
            label: "debian 3.11".into(),
            exe: "/usr/bin/python3.11".into(),
            launcher: Launcher::Host,
            strategy: "auto",
            expect_strategy: "exports",
        });
    }
    for minor in [13, 14, 15] {
        let exe = format!("/usr/bin/python3.{minor}");
        assert!(
            Path::new(SID_ROOT).join(&exe[1..]).exists(),
            "{SID_ROOT}{exe} missing: `cargo xtask test` makes the sid root"
        );
        out.push(Python {
            version: (3, minor),
            label: format!("sid 3.{minor} (container)"),
            exe: exe.into(),
            launcher: Launcher::Container,
            strategy: "auto",
            expect_strategy: "exports",
        });
    }
    out
}

/// The distributions' builds again, with the libc strategy forced (what auto used before
/// `exports`, and what it falls back to when disassembly finds no route).
pub fn distro_pythons_libc() -> Vec<Python> {
    distro_pythons()
        .into_iter()
        .map(|p| Python {
            label: format!("{} libc", p.label),
            strategy: "libc",
            expect_strategy: "libc",
            ..p
        })
        .collect()
}

/// Every case: pyenv with symbols, pyenv forced to libc, and the distributions' builds (auto,
/// then libc forced).
pub fn all_cases() -> Vec<Python> {
    let mut v = pythons();
    v.extend(pythons_libc());
    v.extend(distro_pythons());
    v.extend(distro_pythons_libc());
    v
}

/// A process the test started; killed when the test ends, pass or fail.
pub struct Target {
    pub child: Child,
    /// The observed PID when it is not the child's (containers: unshare's child).
    pub pid: Option<u32>,
}

impl Target {
    /// Starts `python script args…` and waits for its `ready` line.
    pub fn start(python: &Path, script: &Path, args: &[&str]) -> Target {
        Self::start_with_env(python, script, args, &[])
    }

    /// The same with extra environment variables (e.g. LD_LIBRARY_PATH to another libpython).
    pub fn start_with_env(
        python: &Path,
        script: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Target {
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
        wait_ready(&mut child, &python.display().to_string());
        Target { child, pid: None }
    }

    /// Starts a workload (a file of scripts/workloads) the way the case runs interpreters.
    pub fn launch(py: &Python, workload_name: &str, args: &[&str]) -> Target {
        match py.launcher {
            Launcher::Host => Target::start(&py.exe, &workload(workload_name), args),
            Launcher::Container => {
                let script = install_in_sid(workload_name);
                let mut child = Command::new("unshare")
                    .args(["--mount", "--pid", "--fork", "--kill-child", "--mount-proc"])
                    .arg(format!("--root={SID_ROOT}"))
                    .arg(&py.exe)
                    .arg(&script)
                    .args(args)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("unshare");
                wait_ready(&mut child, &py.label);
                // unshare forks the interpreter: observe that child by its host PID.
                let children =
                    std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
                        .expect("children of unshare");
                let pid = children
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("interpreter PID");
                Target {
                    child,
                    pid: Some(pid),
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid.unwrap_or_else(|| self.child.id())
    }
}

fn wait_ready(child: &mut Child, what: &str) {
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("reading ready line");
    assert_eq!(line.trim(), "ready", "{what} did not start");
}

/// Copies a workload into the sid root; returns its path inside the root.
pub fn install_in_sid(name: &str) -> String {
    let dir = Path::new(SID_ROOT).join("tmp/gilwatch-workloads");
    std::fs::create_dir_all(&dir).expect("sid workload dir");
    std::fs::copy(workload(name), dir.join(name)).expect("copying workload into the sid root");
    format!("/tmp/gilwatch-workloads/{name}")
}

impl Drop for Target {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// gilwatch with SIGINT and SIGTERM at their defaults, unblocked: a test run from a shell's
/// background job would otherwise pass an ignored SIGINT on to gilwatch and its command.
pub fn gilwatch_command(args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(GILWATCH);
    cmd.args(args);
    // SAFETY: between fork and exec only async-signal-safe calls (signal, sigprocmask) on
    // values that live on this stack frame.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd
}

/// Runs gilwatch to completion (with a generous timeout) and returns its output.
pub fn gilwatch(args: &[&str]) -> Output {
    let child = gilwatch_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gilwatch");
    wait_output(child, Duration::from_secs(60))
}

pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("waiting for gilwatch").is_some() {
            return child.wait_with_output().expect("gilwatch output");
        }
        if start.elapsed() > limit {
            child.kill().ok();
            let out = child.wait_with_output().expect("gilwatch output");
            panic!(
                "gilwatch did not finish in {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Observes a running target for `secs` and returns the final JSON report.
pub fn observe(pid: u32, secs: &str) -> Value {
    observe_with(pid, secs, &[])
}

pub fn observe_with(pid: u32, secs: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "-p".to_owned(),
        pid.to_string(),
        "-d".into(),
        secs.into(),
        "-q".into(),
        "--json".into(),
        "-".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    final_report(&gilwatch(&args))
}

/// The final JSON report of a gilwatch run that must have succeeded.
pub fn final_report(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "gilwatch failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(&out.stdout)
}

pub fn last_json(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in: {text}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"))
}

pub fn threads(report: &Value) -> &Vec<Value> {
    report["threads"].as_array().expect("threads array")
}

/// The thread named `name` (its Python name). A failure names the interpreter and strategy
/// (from the report itself) and every thread with its TID.
pub fn thread<'a>(report: &'a Value, name: &str) -> &'a Value {
    threads(report)
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "{}: no thread named {name} in [{}] (ended {}, lost events {})",
                whose(report),
                names(report),
                report["ended"],
                report["lost_events"]
            )
        })
}

/// "CPython 3.12.1 (/path), strategy libc" from a report's header, for failure messages.
pub fn whose(report: &Value) -> String {
    let i = &report["interpreter"];
    format!(
        "CPython {} ({}), strategy {}",
        i["version"].as_str().unwrap_or("?"),
        i["path"].as_str().unwrap_or("?"),
        i["strategy"].as_str().unwrap_or("?")
    )
}

/// Every thread of a report as `name (os name, tid, acquisitions)`.
pub fn names(report: &Value) -> String {
    threads(report)
        .iter()
        .map(|t| {
            format!(
                "{} (os {}, tid {}, {} acquisitions)",
                t["name"].as_str().unwrap_or("?"),
                t["os_name"].as_str().unwrap_or("?"),
                t["tid"],
                t["acquisitions"]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn ns(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Share of the run's wall time, in percent, of a thread's total for `field` (wait_ns/hold_ns).
pub fn share(report: &Value, t: &Value, field: &str) -> f64 {
    ns(&t[field]["total"]) * 100.0 / ns(&report["duration_ns"])
}

pub fn ms(ns_value: &Value) -> f64 {
    ns(ns_value) / 1e6
}

/// Python thread names are read from memory from 3.7 on (3.6 reports the OS name).
pub fn has_python_names(p: &Python) -> bool {
    p.version >= (3, 7)
}

/// Observes a case's workload and checks the report's header says what the case expects.
pub fn observe_case(py: &Python, target: &Target, secs: &str) -> Value {
    let r = observe_with(target.pid(), secs, &py.strategy_args());
    assert_eq!(
        r["interpreter"]["strategy"], py.expect_strategy,
        "{}: strategy",
        py.label
    );
    let version = r["interpreter"]["version"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        version.starts_with(&format!("{}.{}.", py.version.0, py.version.1)),
        "{}: version {version}",
        py.label
    );
    if matches!(py.launcher, Launcher::Container) {
        assert_eq!(
            r["ns_pid"], 1,
            "{}: the interpreter is PID 1 of its namespace",
            py.label
        );
    }
    assert_eq!(r["lost_events"], 0, "{}", py.label);
    r
}

/// The threads of a report sorted by a field's total, largest first.
pub fn by_total<'a>(report: &'a Value, field: &str) -> Vec<&'a Value> {
    let mut v: Vec<&Value> = threads(report).iter().collect();
    v.sort_by(|a, b| ns(&b[field]["total"]).total_cmp(&ns(&a[field]["total"])));
    v
}

/// Every BPF program loaded in the kernel now, as bpftool lists them (`id`, `name`, …).
pub fn loaded_programs() -> Vec<Value> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("bpftool JSON") {
        Value::Array(progs) => progs,
        other => panic!("bpftool listed no array: {other}"),
    }
}

/// Names of all loaded BPF programs (bpftool truncates them to 15 bytes).
pub fn loaded_program_names() -> Vec<String> {
    loaded_programs()
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// The IDs of the BPF programs a running gilwatch holds, once it holds at least `at_least`
/// (it loads them while attaching). Other runs on the machine have programs of the same names,
/// so a test follows its own run's programs by ID, whatever the strategy named them.
pub fn programs_of_run(pid: u32, at_least: usize) -> Vec<u64> {
    let start = Instant::now();
    loop {
        let ids = bpf_prog_ids_of(pid);
        if ids.len() >= at_least {
            return ids;
        }
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            state
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z')),
            "gilwatch (PID {pid}) ended before it held {at_least} BPF programs"
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gilwatch (PID {pid}) holds {} BPF programs after 30 s, want {at_least}",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Panics unless every program of `ids` leaves the kernel within 2 s (freeing follows the last
/// reference after an RCU grace period).
pub fn assert_unloaded(ids: &[u64], what: &str) {
    assert!(!ids.is_empty(), "{what}: no program IDs to follow");
    let mut left = Vec::new();
    for _ in 0..40 {
        left = still_loaded(ids);
        if left.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: programs {left:?} of {ids:?} still loaded 2 s after gilwatch exited");
}

/// IDs of the BPF programs a process holds open (its /proc fdinfo), while it runs.
pub fn bpf_prog_ids_of(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = fds
        .filter_map(Result::ok)
        .filter_map(|f| std::fs::read_to_string(f.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Which of these BPF program IDs are still loaded in the kernel.
pub fn still_loaded(ids: &[u64]) -> Vec<u64> {
    loaded_programs()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .filter(|id| ids.contains(id))
        .collect()
}
