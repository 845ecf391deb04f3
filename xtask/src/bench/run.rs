//! One measured run: start a workload, attach an observer (or none), measure, tear down.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

use super::{
    Metrics,
    attached::{self, Point},
    deps::Env,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// The target alone.
    None,
    /// gilwatch as a user runs it: default overhead budget, live table every 2 s.
    Gilwatch,
    /// gilwatch with no budget: every GIL cycle probed, whatever it costs.
    GilwatchFull,
    /// The same without blame (`--no-blame`): what blame's frame walks on expired GIL waits
    /// cost, by difference with GilwatchFull.
    GilwatchNoBlame,
    /// The bpftrace script a user would write: on a CPython with symbols
    /// scripts/bench/gil_wait_hold.bt (uprobe+uretprobe on take_gil, uprobe on drop_gil), on a
    /// stripped one and on the lock loop scripts/bench/libc_lock.bt (the same on
    /// pthread_mutex_lock/unlock).
    Bpftrace,
    /// `gilwatch --lock g_lock` on the lock loop.
    GilwatchLock,
    /// `gilwatch --mutexes` on the lock loop.
    GilwatchMutexes,
    /// `gilwatch --max-overhead none --trace FILE`: every GIL span also written to the ring
    /// buffer and the timeline.
    GilwatchTrace,
    /// `gilwatch --py-locks` on the Python lock loop.
    GilwatchPyLocks,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::None => "unobserved",
            Config::Gilwatch => "gilwatch (default)",
            Config::GilwatchFull => "gilwatch --max-overhead none",
            Config::GilwatchNoBlame => "gilwatch --max-overhead none --no-blame",
            Config::Bpftrace => "bpftrace script",
            Config::GilwatchLock => "gilwatch --lock",
            Config::GilwatchMutexes => "gilwatch --mutexes",
            Config::GilwatchTrace => "gilwatch --max-overhead none --trace",
            Config::GilwatchPyLocks => "gilwatch --py-locks",
        }
    }
}

/// The CPython a workload runs on: pyenv's (symbols, shared libpython) or a distribution's
/// stripped build, on the host or in the Debian sid root (run there like a container).
#[derive(Debug, Clone)]
pub struct Interp {
    pub label: String,
    /// The interpreter's path (inside the sid root for a contained one).
    pub exe: PathBuf,
    pub contained: bool,
    /// Symbols and a shared libpython (bpftrace probes take_gil); else stripped.
    pub symbols: bool,
}

impl Interp {
    /// Its command line for a script of scripts/bench: unshare into the sid root when contained
    /// (the script is copied there first).
    fn command(&self, env: &Env, script: &str) -> anyhow::Result<Command> {
        if !self.contained {
            let mut c = Command::new(&self.exe);
            c.arg(env.scripts.join(script));
            return Ok(c);
        }
        let dir = std::path::Path::new(crate::sid::ROOT).join("tmp/gilwatch-bench");
        std::fs::create_dir_all(&dir).context("creating the bench's directory in the sid root")?;
        std::fs::copy(env.scripts.join(script), dir.join(script))
            .with_context(|| format!("copying {script} into the sid root"))?;
        let mut c = Command::new("unshare");
        c.args(["--mount", "--pid", "--fork", "--kill-child", "--mount-proc"])
            .arg(format!("--root={}", crate::sid::ROOT))
            .arg(&self.exe)
            .arg(format!("/tmp/gilwatch-bench/{script}"));
        Ok(c)
    }
}

#[derive(Debug, Clone)]
pub enum Workload {
    /// One GIL release/acquire per iteration (os.write to /dev/null), flat out: ns per cycle.
    Cycle(Interp),
    /// One CPU thread and two I/O threads: each one's throughput.
    Mix,
    /// Flask under gunicorn (1 worker, 8 threads), driven by wrk over loopback.
    Web,
    /// A C program's uncontended pthread_mutex_lock/unlock loop: ns per pair.
    Lock,
    /// An uncontended `with lock:` loop on a threading.Lock: ns per pair.
    PyLock(Interp),
}

/// Kills the process on drop, so no error path leaves a workload spinning.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Python workload that prints "ready", waits for a line on stdin, then prints one JSON line.
struct Gated {
    guard: Guard,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The observed PID when it is not the child's (contained: unshare's child).
    pid: Option<u32>,
}

impl Gated {
    fn start(env: &Env, script: &str, args: &[String]) -> anyhow::Result<Gated> {
        let interp = Interp {
            label: String::new(),
            exe: env.python.clone(),
            contained: false,
            symbols: true,
        };
        Self::start_on(env, &interp, script, args)
    }

    fn start_on(
        env: &Env,
        interp: &Interp,
        script: &str,
        args: &[String],
    ) -> anyhow::Result<Gated> {
        Self::spawn(interp.command(env, script)?, script, args, interp.contained)
    }

    /// `contained`: the command is unshare, and the workload its child (observed by that PID).
    fn spawn(
        mut cmd: Command,
        script: &str,
        args: &[String],
        contained: bool,
    ) -> anyhow::Result<Gated> {
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {script}"))?;
        let stdin = child.stdin.take().context("workload stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("workload stdout")?);
        let mut g = Gated {
            guard: Guard(child),
            stdin,
            stdout,
            pid: None,
        };
        let line = g.line()?;
        if line.trim() != "ready" {
            bail!("{script} said {line:?} instead of ready");
        }
        if contained {
            let id = g.guard.0.id();
            let children = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))
                .context("reading unshare's children")?;
            g.pid = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok());
            g.pid.context("unshare has no child")?;
        }
        Ok(g)
    }

    fn pid(&self) -> u32 {
        self.pid.unwrap_or_else(|| self.guard.0.id())
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut s = String::new();
        self.stdout
            .read_line(&mut s)
            .context("reading the workload")?;
        Ok(s)
    }

    fn go(&mut self) -> anyhow::Result<Value> {
        self.send(b"go\n")
    }

    fn send(&mut self, line: &[u8]) -> anyhow::Result<Value> {
        self.stdin
            .write_all(line)
            .context("starting the workload")?;
        self.stdin.flush().ok();
        let line = self.line()?;
        serde_json::from_str(&line).with_context(|| format!("workload printed {line:?}"))
    }
}

/// A running observer: gilwatch or bpftrace, attached to one PID.
pub struct Observer {
    guard: Guard,
    json: Option<PathBuf>,
    pub attach_ms: f64,
}

/// What the observer is pointed at, for its command line and for knowing when it is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// A CPython with symbols and a shared libpython (pyenv's).
    Symbols,
    /// A stripped CPython (gilwatch's libc strategy; bpftrace on libc's mutex functions).
    Stripped,
    /// The lock loops (C and Python): they wait for the breakpoints themselves ("armed").
    LockLoop,
}

impl Observer {
    /// Starts the observer and returns once all its uprobes are in place (breakpoints in the
    /// target's text): that moment is what "attach time" measures.
    pub fn start(
        env: &Env,
        config: Config,
        pid: u32,
        probed: Probed,
    ) -> anyhow::Result<Option<Observer>> {
        let tmp = std::env::temp_dir().join(format!("gilwatch-bench-{}.json", std::process::id()));
        let gilwatch = |args: &[&str]| {
            let mut c = Command::new(&env.gilwatch);
            c.args(["-p", &pid.to_string(), "--json"])
                .arg(&tmp)
                .args(args);
            c
        };
        let (mut cmd, points, json) = match config {
            Config::None => return Ok(None),
            Config::Gilwatch
            | Config::GilwatchFull
            | Config::GilwatchNoBlame
            | Config::GilwatchTrace => {
                let points = attached::gilwatch_points(&env.gilwatch, pid)?;
                let trace = std::env::temp_dir().join("gilwatch-bench.pftrace");
                let trace = trace.to_string_lossy();
                let args: Vec<&str> = match config {
                    Config::GilwatchFull => vec!["--max-overhead", "none"],
                    Config::GilwatchNoBlame => vec!["--max-overhead", "none", "--no-blame"],
                    Config::GilwatchTrace => vec!["--max-overhead", "none", "--trace", &trace],
                    _ => Vec::new(),
                };
                let c = gilwatch(&args);
                (c, points, Some(tmp.clone()))
            }
            Config::GilwatchLock => (
                gilwatch(&["--lock", "g_lock"]),
                Vec::new(),
                Some(tmp.clone()),
            ),
            Config::GilwatchMutexes => (gilwatch(&["--mutexes"]), Vec::new(), Some(tmp.clone())),
            Config::GilwatchPyLocks => (gilwatch(&["--py-locks"]), Vec::new(), Some(tmp.clone())),
            Config::Bpftrace => {
                let (file, placeholder, lib, points) = match probed {
                    Probed::Symbols => {
                        // The same functions in libpython (bpftrace's uretprobe shares
                        // take_gil's breakpoint with its uprobe).
                        let lib = env.libpython.clone();
                        let name = lib
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let points: Vec<Point> = attached::gilwatch_points(&env.gilwatch, pid)?
                            .into_iter()
                            .filter(|p| p.object == name)
                            .collect();
                        ("gil_wait_hold.bt", "LIBPYTHON", lib, points)
                    }
                    Probed::Stripped | Probed::LockLoop => {
                        let (lib, points) = attached::libc_mutex_points(pid)?;
                        let points = if probed == Probed::LockLoop {
                            Vec::new()
                        } else {
                            points
                        };
                        ("libc_lock.bt", "LIBC", lib, points)
                    }
                };
                let script = std::fs::read_to_string(env.scripts.join(file))
                    .with_context(|| format!("reading {file}"))?;
                let script = script.replace(placeholder, &lib.to_string_lossy());
                let path = std::env::temp_dir().join("gilwatch-bench.bt");
                std::fs::write(&path, script).context("writing the bpftrace script")?;
                let mut c = Command::new("bpftrace");
                c.args(["-p", &pid.to_string()]).arg(path);
                (c, points, None)
            }
        };
        let armed = attached::Armed::new(pid, &points)?;
        let started = Instant::now();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", config.name()))?;
        let mut guard = Guard(child);
        loop {
            if let Some(status) = guard.0.try_wait()? {
                bail!("{} exited before attaching ({status})", config.name());
            }
            if armed.all() {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("{} did not attach within 30 s", config.name());
            }
            sleep(Duration::from_millis(2));
        }
        Ok(Some(Observer {
            guard,
            json,
            attach_ms: started.elapsed().as_secs_f64() * 1e3,
        }))
    }

    pub fn pid(&self) -> u32 {
        self.guard.0.id()
    }

    /// SIGINT, then what gilwatch reported (its final JSON object), if it writes one.
    pub fn stop(mut self) -> anyhow::Result<Option<Value>> {
        // SAFETY: kill(2) on our own child's PID, which we have not waited for, so it is ours.
        unsafe { libc_kill(self.pid() as i32, 2) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.guard.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("observer did not exit within 20 s of SIGINT");
            }
            sleep(Duration::from_millis(10));
        }
        let Some(path) = self.json.take() else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).context("reading gilwatch's JSON")?;
        let last = text.lines().last().unwrap_or_default();
        Ok(Some(
            serde_json::from_str(last).context("parsing gilwatch's JSON")?,
        ))
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// What gilwatch's report says about its own cost: coverage (1.0 when it observed all the
/// time), its estimate of the cost over the run (% of one CPU), its measurement of it where it
/// makes one, and the kernel memory its maps took.
fn reported(report: &Option<Value>, m: &mut Metrics) {
    let Some(r) = report else { return };
    let s = &r["sampling"];
    if !s.is_object() {
        return;
    }
    m.push(("coverage", s["coverage"].as_f64().unwrap_or(1.0)));
    // --trace: the records written per second, and how many a full ring buffer lost (0: that
    // rate is sustained).
    let t = &r["trace"];
    if let (Some(records), Some(lost), Some(ns)) = (
        t["records"].as_f64(),
        t["lost"].as_f64(),
        r["duration_ns"].as_f64(),
    ) {
        m.push(("trace_records_per_s", records / (ns / 1e9).max(1e-9)));
        m.push(("trace_lost", lost));
    }
    for (key, v) in [
        ("estimated_pct", s["overhead_pct"].as_f64()),
        ("gilwatch_measured_pct", s["measured_overhead_pct"].as_f64()),
        (
            "kernel_memory_mb",
            r["kernel_memory_bytes"].as_f64().map(|b| b / 1e6),
        ),
    ] {
        if let Some(v) = v {
            m.push((key, v));
        }
    }
}

pub fn once(
    env: &Env,
    workload: &Workload,
    config: Config,
    seconds: f64,
) -> anyhow::Result<Metrics> {
    let (mut target, probed) = match workload {
        Workload::Cycle(interp) => {
            let g = Gated::start_on(env, interp, "gil_cycle.py", &[seconds.to_string()])?;
            (
                g,
                if interp.symbols {
                    Probed::Symbols
                } else {
                    Probed::Stripped
                },
            )
        }
        Workload::Mix => (
            Gated::start(env, "mix.py", &[seconds.to_string(), "2".to_owned()])?,
            Probed::Symbols,
        ),
        Workload::Lock => (
            Gated::spawn(
                Command::new(&env.lock_loop),
                "lock_loop",
                &[seconds.to_string()],
                false,
            )?,
            Probed::LockLoop,
        ),
        Workload::PyLock(interp) => (
            Gated::start_on(env, interp, "py_lock_loop.py", &[seconds.to_string()])?,
            Probed::LockLoop,
        ),
        Workload::Web => return web(env, config, seconds),
    };
    let observer = Observer::start(env, config, target.pid(), probed)?;
    let result = if probed == Probed::LockLoop && observer.is_some() {
        target.send(b"armed\n")?
    } else {
        target.go()?
    };
    let mut m: Metrics = Vec::new();
    for key in [
        "ns_per_cycle",
        "ns_per_pair",
        "cpu_kloops_per_s",
        "io_per_s",
    ] {
        if let Some(v) = result[key].as_f64() {
            m.push((key, v));
        }
    }
    let mut observer = observer;
    if let (Some(o), Some(ms)) = (observer.as_mut(), result["attach_ms"].as_f64()) {
        // The lock loop saw its breakpoints arrive: from the observer's start, about.
        o.attach_ms = ms;
    }
    finish(observer, &mut m)?;
    Ok(m)
}

fn finish(observer: Option<Observer>, m: &mut Metrics) -> anyhow::Result<()> {
    if let Some(o) = observer {
        m.push(("attach_ms", o.attach_ms));
        let report = o.stop()?;
        reported(&report, m);
    }
    Ok(())
}

const PORT: u16 = 18_731;

fn web(env: &Env, config: Config, seconds: f64) -> anyhow::Result<Metrics> {
    let master = Guard(
        Command::new(env.venv.join("bin/gunicorn"))
            .args(["-w", "1", "--threads", "8", "-b"])
            .arg(format!("127.0.0.1:{PORT}"))
            .arg("--chdir")
            .arg(&env.scripts)
            .args(["--log-level", "warning", "app:app"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting gunicorn")?,
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", PORT)).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("gunicorn did not listen within 20 s");
        }
        sleep(Duration::from_millis(50));
    }
    let worker = worker_of(master.0.id())?;
    // Warm up unobserved (imports, first requests), then observe a measured run.
    wrk(1.0)?;
    let observer = Observer::start(env, config, worker, Probed::Symbols)?;
    let (rps, p99_ms) = wrk(seconds)?;
    let mut m: Metrics = vec![("requests_per_s", rps), ("p99_ms", p99_ms)];
    finish(observer, &mut m)?;
    drop(master);
    Ok(m)
}

fn worker_of(master: u32) -> anyhow::Result<u32> {
    let path = format!("/proc/{master}/task/{master}/children");
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        if let Some(pid) = text.split_whitespace().next().and_then(|s| s.parse().ok()) {
            return Ok(pid);
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("gunicorn started no worker");
        }
        sleep(Duration::from_millis(20));
    }
}

/// Runs wrk; returns requests/s and the p99 latency in ms.
fn wrk(seconds: f64) -> anyhow::Result<(f64, f64)> {
    let out = Command::new("wrk")
        .args(["-t2", "-c16", "--latency", "--timeout", "5s"])
        .arg(format!("-d{}s", seconds.ceil() as u64))
        .arg(format!("http://127.0.0.1:{PORT}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk's output: {text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_ms(v.trim()))
        .ok_or_else(|| anyhow!("no 99% latency in wrk's output: {text}"))?;
    Ok((rps, p99))
}

/// wrk's durations: 850.00us, 12.34ms, 1.20s.
fn duration_ms(s: &str) -> Option<f64> {
    for (unit, scale) in [("us", 1e-3), ("ms", 1.0), ("s", 1e3)] {
        if let Some(n) = s.strip_suffix(unit) {
            return n.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

/// Nanoseconds on CPU of all of a process's threads (from the scheduler, not tick-sampled).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A /proc/PID/status field in kB (VmHWM: peak RSS; VmRSS: now).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches(" kB")
                .parse()
                .ok()
        })
}

/// gilwatch's own CPU and memory while it observes (all events, live table every 2 s): at about
/// 10^5 GIL cycles/s, and with 1000 threads.
pub fn observer_cost(env: &Env, seconds: f64) -> anyhow::Result<Value> {
    let mut out = Vec::new();
    for (label, script, args) in [
        (
            "1e5 GIL cycles/s",
            "gil_cycle.py",
            vec![format!("{}", seconds + 3.0), "100000".to_owned()],
        ),
        (
            "1000 threads",
            "many_threads.py",
            vec![format!("{}", seconds + 3.0), "1000".to_owned()],
        ),
    ] {
        let mut target = if script == "gil_cycle.py" {
            let mut g = Gated::start(env, script, &args)?;
            g.stdin
                .write_all(b"go\n")
                .context("starting the workload")?;
            g.stdin.flush().ok();
            g
        } else {
            Gated::start(env, script, &args)?
        };
        let obs = Observer::start(env, Config::GilwatchFull, target.pid(), Probed::Symbols)?
            .ok_or_else(|| anyhow!("no observer"))?;
        // Let the first interval pass (thread names, maps filling), then measure a window.
        sleep(Duration::from_secs(1));
        let (c0, t0) = (cpu_ns(obs.pid()), Instant::now());
        sleep(Duration::from_secs_f64(seconds / 2.0));
        let rss_mid = status_kb(obs.pid(), "VmRSS");
        sleep(Duration::from_secs_f64(seconds / 2.0));
        let cpu_pct = (cpu_ns(obs.pid()) - c0) as f64 * 100.0 / t0.elapsed().as_nanos() as f64;
        let rss_end = status_kb(obs.pid(), "VmRSS");
        let hwm = status_kb(obs.pid(), "VmHWM");
        let attach_ms = obs.attach_ms;
        let report = obs.stop()?;
        let rate = report
            .as_ref()
            .and_then(|r| r["gil"]["acquisitions_per_sec"].as_f64());
        let threads = report
            .as_ref()
            .and_then(|r| r["threads"].as_array().map(Vec::len));
        // The workload ends when its Guard drops; kill it now so it stops loading the machine.
        let _ = target.guard.0.kill();
        out.push(json!({
            "case": label,
            "gil_cycles_per_s": rate,
            "threads_seen": threads,
            "cpu_pct_of_one_core": cpu_pct,
            "rss_kb_mid": rss_mid,
            "rss_kb_end": rss_end,
            "peak_rss_kb": hwm,
            "attach_ms": attach_ms,
        }));
    }
    Ok(Value::Array(out))
}
