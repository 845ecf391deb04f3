//! Runbook steps, live: two snapshots of a workload whose contention changed between them,
//! compared by `gilwatch diff`, and `--fail-if` on a run and on a diff (exit 7).
//!
//! Before: `contended.py` with one I/O thread and a 0.1 ms switch interval (it waits ≈ 30% of
//! its time, briefly each time); after: three I/O threads behind the CPU thread at the default
//! 5 ms interval (each waits ≈ 85%: ≈ 250% summed). The thresholds sit far from both (100%
//! summed wait, a 2 ms p99): load on the machine moves them by tens of %, not by a factor.
mod support;

use std::path::Path;

use serde_json::Value;
use support::*;

fn python() -> Option<Python> {
    let py = pythons().into_iter().find(|p| p.version == (3, 12));
    if py.is_none() {
        missing_fixture("pyenv CPython 3.12");
    }
    py
}

/// `gilwatch -p PID -d 3s -q --json FILE` on `contended.py ARGS`, plus `extra`; its exit code.
fn snapshot(py: &Python, args: &[&str], file: &Path, extra: &[&str]) -> i32 {
    let target = Target::launch(py, "contended.py", args);
    let pid = target.pid().to_string();
    let mut a = vec![
        "-p",
        &pid,
        "-d",
        "3s",
        "-q",
        "--json",
        file.to_str().unwrap(),
    ];
    a.extend(extra);
    let out = gilwatch(&a);
    assert!(
        file.exists(),
        "no report written: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code().expect("gilwatch exit code")
}

fn diff(before: &Path, after: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut a = vec![
        "diff",
        before.to_str().unwrap(),
        after.to_str().unwrap(),
        "--json",
        "-",
    ];
    a.extend(extra);
    let out = gilwatch(&a);
    let table = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code().expect("exit code"),
        last_json(&out.stdout),
        table,
    )
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn diff_of_two_snapshots_sees_contention_go_up_and_fail_if_fails_the_step() {
    require_root();
    let Some(py) = python() else { return };
    let dir = std::env::temp_dir().join(format!("gilwatch-runbook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (before, after) = (dir.join("before.json"), dir.join("after.json"));

    // A run's own --fail-if: the report is written, then exit 7 only when the condition holds.
    let code = snapshot(
        &py,
        &["30", "1", "0.0001"],
        &before,
        &["--fail-if", "wait_pct > 100"],
    );
    assert_eq!(code, 0, "before: summed wait should stay under 100%");
    let code = snapshot(&py, &["30", "3"], &after, &["--fail-if", "wait_pct > 100"]);
    assert_eq!(
        code, 7,
        "after: three waiting threads should exceed 100% summed wait"
    );

    let (code, d, table) = diff(
        &before,
        &after,
        &["--fail-if", "wait_pct > 100", "--fail-if", "p99_wait > 2ms"],
    );
    eprintln!("{table}");
    assert_eq!(code, 7, "{table}");
    assert_eq!(d["kind"], "diff");
    assert_eq!(d["change"], "contention-up", "{table}");
    let verdict = d["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("contention up: summed wait "),
        "{verdict}"
    );
    assert!(table.contains(verdict), "{table}");
    let (wb, wa) = (
        d["before"]["figures"]["wait_pct"].as_f64().unwrap(),
        d["after"]["figures"]["wait_pct"].as_f64().unwrap(),
    );
    assert!(wb < 70.0 && wa > 150.0, "summed wait {wb}% → {wa}%");
    // The I/O threads are one group, one thread before and three after, and it is listed first.
    let io = &d["threads"][0];
    assert_eq!(io["name"], "io-*", "{table}");
    assert_eq!(io["before"]["threads"], 1);
    assert_eq!(io["after"]["threads"], 3);
    // 0.1 ms switch interval vs 5 ms: the p99 of single waits moves past 2 ms.
    let p99 = io["after"]["p99_wait_ns"].as_u64().unwrap();
    assert!(p99 > 4_000_000, "after: p99 wait {p99} ns");
    let fail_if = d["fail_if"].as_array().unwrap();
    assert_eq!(fail_if.len(), 2);
    assert!(fail_if.iter().all(|v| v["held"] == true), "{fail_if:?}");

    // The other way round: contention down, and AFTER (the quiet run) passes the same step.
    let (code, d, table) = diff(&after, &before, &["--fail-if", "wait_pct > 100"]);
    assert_eq!(code, 0, "{table}");
    assert_eq!(d["change"], "contention-down", "{table}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn bad_runbook_input_is_one_line_and_exit_2() {
    require_root();
    let dir = std::env::temp_dir().join(format!("gilwatch-runbook-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.json");
    std::fs::write(&junk, "{\"kind\": \"interval\"}\n").unwrap();
    let out = gilwatch(&["diff", junk.to_str().unwrap(), junk.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("has no final GIL report"), "{err}");
    let out = gilwatch(&["-p", "1", "--fail-if", "wait_pct 50"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("METRIC OP VALUE"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
