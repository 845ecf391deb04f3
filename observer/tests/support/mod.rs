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

/// A pyenv CPython: its version and interpreter path.
#[derive(Debug, Clone)]
pub struct Python {
    pub version: (u32, u32),
    pub label: String,
    pub exe: PathBuf,
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
        if major != 3 || !(6..=13).contains(&minor) {
            continue;
        }
        let exe = entry.path().join(format!("bin/python{major}.{minor}"));
        if exe.exists() {
            out.push(Python {
                version: (major, minor),
                label,
                exe,
            });
        }
    }
    out.sort_by_key(|p| p.version);
    assert!(
        !out.is_empty(),
        "no pyenv CPython under /root/.pyenv/versions"
    );
    out
}

/// A process the test started; killed when the test ends, pass or fail.
pub struct Target {
    pub child: Child,
}

impl Target {
    /// Starts `python script args…` and waits for its `ready` line.
    pub fn start(python: &Path, script: &Path, args: &[&str]) -> Target {
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("reading ready line");
        assert_eq!(
            line.trim(),
            "ready",
            "{} {} did not start",
            python.display(),
            script.display()
        );
        Target { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Runs gilwatch to completion (with a generous timeout) and returns its output.
pub fn gilwatch(args: &[&str]) -> Output {
    let child = Command::new(GILWATCH)
        .args(args)
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
    let out = gilwatch(&["-p", &pid.to_string(), "-d", secs, "-q", "--json", "-"]);
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

/// The thread named `name` (its Python name).
pub fn thread<'a>(report: &'a Value, name: &str) -> &'a Value {
    threads(report)
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no thread named {name} in {}", names(report)))
}

pub fn names(report: &Value) -> String {
    threads(report)
        .iter()
        .map(|t| t["name"].as_str().unwrap_or("?").to_owned())
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

/// The threads of a report sorted by a field's total, largest first.
pub fn by_total<'a>(report: &'a Value, field: &str) -> Vec<&'a Value> {
    let mut v: Vec<&Value> = threads(report).iter().collect();
    v.sort_by(|a, b| ns(&b[field]["total"]).total_cmp(&ns(&a[field]["total"])));
    v
}

/// Names of gilwatch's BPF programs currently loaded in the kernel (bpftool truncates to 15 bytes).
pub fn loaded_gilwatch_programs() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| n.starts_with("take_gil") || n.starts_with("drop_gil"))
        .map(str::to_owned)
        .collect()
}
