//! Privileged tests of blame: the Python code that held the GIL while others waited, named by
//! qualname, file and line, and its hold time against the workload's own clock. Real BPF, real
//! interpreters: every pyenv CPython 3.8–3.13 (symtab), Debian's stripped python3.11 and sid's
//! 3.13–3.15 in containers (exports); where blame cannot run (3.7, the libc strategy,
//! --no-blame) the report must say so.
//!
//! Tolerance: the culprit's blamed hold total must lie between 90% of the workload's own CPU
//! time in its json.dumps calls and 110% of their wall-clock time. The hold is the wall time
//! from the acquisition to the drop, so it is at most the call's wall time plus a few µs (the
//! Python code around the call), and at least its CPU time (the GIL is held while the thread is
//! on the CPU). The workload's wall clock also counts what follows the drop: the waiter that
//! asked for the drop requested it, so the call's thread waits for the GIL again before it can
//! read its clock, a few µs on a quiet machine, milliseconds under load. Measured on this 2-CPU
//! VM under other engineers' builds: 3–16% under the wall clock (3.8: 804 vs 829 ms; 3.10: 1040
//! vs 1231 ms), and above the CPU time. Every call must also be one blamed hold (90%+).
mod support;

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use support::*;

/// Seconds of work per case: ~20 json.dumps calls of ~30 ms in the pool case.
const RUN_S: &str = "2";
const DUMPS_MS: &str = "30";

/// Runs the gated workload under gilwatch (by PID), starts the work once gilwatch reports, and
/// returns (the final report, the workload's own JSON line).
fn run_case(py: &Python, mode: &str, extra: &[&str]) -> (Value, Value) {
    // The workload's own numbers, in a file (its stdout pipe closes after `ready`): a path in
    // its own root, which is the sid root for containers.
    let inside = format!("/tmp/gilwatch-blame-own-{}.json", std::process::id());
    let host = match py.launcher {
        Launcher::Host => inside.clone(),
        Launcher::Container => format!("{SID_ROOT}{inside}"),
    };
    std::fs::remove_file(&host).ok();
    let target = Target::launch(
        py,
        "blame_pool.py",
        &[mode, RUN_S, DUMPS_MS, "gated", &inside],
    );
    let pid = target.pid();
    let pid_s = pid.to_string();
    let mut args = vec![
        "-p", &pid_s, "-i", "200ms", "--json", "-", "-q", "-d", "30s",
    ];
    args.extend(py.strategy_args());
    args.extend(extra);
    let mut child = gilwatch_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gilwatch");
    // The first interval line: the probes are attached and blame armed; start the work.
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("gilwatch's first line");
    assert!(
        first.starts_with('{'),
        "{}: gilwatch said {first}",
        py.label
    );
    // SAFETY: kill(2) on a PID this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("gilwatch's output");
    let status = child.wait().expect("gilwatch");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).ok();
    }
    assert!(status.success(), "{}: gilwatch failed: {err}", py.label);
    let report = last_json(rest.as_bytes());
    drop(target);
    let own = std::fs::read_to_string(&host)
        .unwrap_or_else(|e| panic!("{}: the workload's numbers ({host}): {e}", py.label));
    std::fs::remove_file(&host).ok();
    let own: Value = serde_json::from_str(own.trim())
        .unwrap_or_else(|e| panic!("{}: workload said {own:?}: {e}", py.label));
    (report, own)
}

/// 3.8+ with symbols, and the distributions' stripped builds.
fn blame_cases() -> Vec<Python> {
    let mut v: Vec<Python> = pythons()
        .into_iter()
        .filter(|p| p.version >= (3, 8))
        .collect();
    v.extend(distro_pythons());
    v
}

fn is_culprit(frame: &Value, own: &Value) -> bool {
    frame["qualname"]
        .as_str()
        .is_some_and(|q| q.ends_with(own["function"].as_str().unwrap_or("-")))
        && frame["filename"]
            .as_str()
            .is_some_and(|f| f.ends_with("blame_pool.py"))
        && frame["line"] == own["line"]
}

/// Checks the top blamed hold stack is the culprit's and its total agrees with the workload.
fn check_culprit(py: &Python, report: &Value, own: &Value, thread: Option<&str>) {
    let b = &report["blame"];
    assert_eq!(b["available"], true, "{}: {}", py.label, b["unavailable"]);
    let holds = b["holds"].as_array().expect("holds");
    assert!(!holds.is_empty(), "{}: no blamed hold: {b}", py.label);
    let top = &holds[0];
    let frames = top["frames"].as_array().expect("frames");
    assert!(
        frames.iter().any(|f| is_culprit(f, own)),
        "{}: the top stack does not name {}:{} ({}); frames: {}",
        py.label,
        own["function"],
        own["line"],
        own["file"],
        top["frames"]
    );
    assert!(
        is_culprit(&top["headline"], own),
        "{}: the headline is {}",
        py.label,
        top["headline"]
    );
    // Every stack through the culprit's line (raw positions can split one line in two).
    let blamed: f64 = holds
        .iter()
        .filter(|s| {
            s["frames"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| is_culprit(f, own)))
        })
        .map(|s| ns(&s["total_ns"]))
        .sum();
    let wall = ns(&own["dumps_ns"]);
    let cpu = ns(&own["dumps_cpu_ns"]);
    let calls = own["calls"].as_u64().unwrap_or(0);
    // ~66 in 2 s on a quiet machine (pool: 20); 7 were seen under other engineers' builds.
    assert!(calls >= 5, "{}: the workload made {calls} calls", py.label);
    eprintln!(
        "{}: blamed {:.0} ms vs workload {:.0} ms wall, {:.0} ms CPU ({:+.1}% of wall), {} calls, {} holds, top max {:.1} ms",
        py.label,
        blamed / 1e6,
        wall / 1e6,
        cpu / 1e6,
        (blamed - wall) * 100.0 / wall,
        calls,
        top["count"],
        ns(&top["max_ns"]) / 1e6
    );
    assert!(
        blamed >= cpu * 0.9 && blamed <= wall * 1.1,
        "{}: blamed {:.0} ms, the workload's own clocks {:.0} ms wall, {:.0} ms CPU",
        py.label,
        blamed / 1e6,
        wall / 1e6,
        cpu / 1e6
    );
    // Every call was a sampled hold. A few more holds can carry the culprit's stack: after the
    // forced drop that ends a call, the thread takes the GIL back at the same instruction, and
    // under load that short hold can outlast a switch interval too (Debian 3.11: 22 for 19).
    let holds: u64 = b["holds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["frames"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| is_culprit(f, own)))
        })
        .filter_map(|s| s["count"].as_u64())
        .sum();
    assert!(
        holds * 10 >= calls * 9 && holds * 2 <= calls * 3 + 2,
        "{}: {holds} blamed holds for {calls} calls",
        py.label
    );
    let share = top["share_pct"].as_f64().unwrap_or(0.0);
    assert!(share > 0.0 && share <= 100.0, "{}: share {share}", py.label);
    if let Some(name) = thread {
        assert_eq!(
            top["threads"][0]["name"], name,
            "{}: the culprit's thread",
            py.label
        );
    }
    assert_eq!(b["lost"], 0, "{}", py.label);
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_pool_task_holding_the_gil_30ms_is_blamed_by_function_and_line() {
    require_root();
    for py in blame_cases() {
        let (report, own) = run_case(&py, "pool", &[]);
        check_culprit(&py, &report, &own, None);
        // Waiting: the pool's workers waited behind it, about to run (or back from) short tasks.
        let waits = report["blame"]["waits"].as_array().expect("waits");
        let short = |s: &&Value| {
            s["frames"].as_array().is_some_and(|f| {
                f.iter().any(|f| {
                    f["qualname"]
                        .as_str()
                        .is_some_and(|q| q.ends_with("short_task"))
                })
            })
        };
        assert!(
            waits.iter().any(|s| short(&s)),
            "{}: no waiting stack names short_task: {}",
            py.label,
            report["blame"]["waits"]
        );
    }
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_metrics_thread_serializing_every_40ms_is_blamed() {
    require_root();
    for py in blame_cases() {
        let (report, own) = run_case(&py, "metrics", &[]);
        check_culprit(&py, &report, &own, Some("metrics"));
    }
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn blame_says_why_it_is_unavailable() {
    require_root();
    let mut cases: Vec<(Python, Vec<&str>, &str)> = Vec::new();
    for py in pythons() {
        if py.version == (3, 7) {
            cases.push((py.clone(), vec![], "not available on Python 3.7"));
        }
        if py.version == (3, 12) {
            cases.push((py.clone(), vec!["--no-blame"], "turned off (--no-blame)"));
        }
    }
    for py in pythons_libc().into_iter().filter(|p| p.version == (3, 12)) {
        cases.push((py, vec![], "not available with the libc strategy"));
    }
    assert!(!cases.is_empty(), "no 3.7 or 3.12 interpreter");
    for (py, extra, why) in cases {
        let target = Target::launch(&py, "spinners.py", &[]);
        let r = observe_with(
            target.pid(),
            "1s",
            &[&py.strategy_args()[..], &extra[..]].concat(),
        );
        let b = &r["blame"];
        assert_eq!(b["available"], false, "{}: {b}", py.label);
        let said = b["unavailable"].as_str().unwrap_or("");
        assert!(said.contains(why), "{}: said {said:?}", py.label);
        drop(target);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn blame_min_hides_stacks_whose_holds_are_all_shorter() {
    require_root();
    let py = pythons()
        .into_iter()
        .find(|p| p.version == (3, 12))
        .expect("pyenv CPython 3.12");
    // Three CPU-bound threads: each hold lasts about a switch interval, every one sampled.
    let target = Target::launch(&py, "spinners.py", &[]);
    let listed = |min: &str| -> usize {
        let r = observe_with(target.pid(), "1500ms", &["--blame-min", min]);
        let b = &r["blame"];
        assert_eq!(b["available"], true, "{}: {b}", py.label);
        assert_eq!(b["min_ns"], humantime(min), "{}: min_ns", py.label);
        assert!(b["samples"].as_u64().unwrap_or(0) > 0, "{}: {b}", py.label);
        b["holds"].as_array().map_or(0, Vec::len)
    };
    assert!(listed("1ms") > 0, "{}: nothing listed over 1 ms", py.label);
    assert_eq!(listed("10s"), 0, "{}: holds listed over 10 s", py.label);
}

fn humantime(d: &str) -> u64 {
    match d {
        "1ms" => 1_000_000,
        "10s" => 10_000_000_000,
        _ => unreachable!("{d}"),
    }
}
