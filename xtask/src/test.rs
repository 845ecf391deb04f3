//! All tests: unit tests (no privileges), then the privileged integration tests, which load the
//! real BPF programs and observe real interpreters (they are `#[ignore]`d in a plain `cargo test`).
//!
//! Here every fixture (each interpreter, the sid root, bpftool) is required: a test that cannot
//! find one fails instead of skipping (GILWATCH_REQUIRE_FIXTURES, read by the tests' support).
//! Every group runs even when an earlier one fails, and the failures are listed at the end.
use anyhow::bail;

use crate::shell::{self, is_root};

/// The variable the tests read: set, a missing fixture is a failure, not a skip.
const REQUIRE_FIXTURES: &str = "GILWATCH_REQUIRE_FIXTURES";

pub fn test(unit_only: bool, args: &[String]) -> anyhow::Result<()> {
    if !unit_only && is_root() {
        // First, so the unit tests that read the sid interpreters' files find them too.
        crate::sid::ensure()?;
    }
    let cargo = || {
        let mut c = shell::cargo();
        if !unit_only {
            c.env(REQUIRE_FIXTURES, "1");
        }
        c
    };
    // Default members only: the eBPF crate builds for the BPF target alone (through observer/build.rs).
    shell::run(cargo().arg("test"))?;
    if unit_only {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the integration tests load eBPF programs: run `sudo -E cargo xtask test` (or --unit for unit tests only)"
        );
    }
    let mut failed = Vec::new();
    // The thread-name reader and the code symbolizer against live interpreters (one test per
    // version each).
    if let Err(e) = shell::run(cargo().args([
        "test",
        "--package",
        "observer",
        "--bin",
        "gilwatch",
        "--",
        "--ignored",
    ])) {
        eprintln!("{e:#}");
        failed.push("gilwatch (thread names, code symbolizer)");
    }
    // One at a time: the workloads measure time, and two CPU-bound tests on a 2-core machine
    // would measure each other. `debuginfo`: stripped interpreters with debug files and
    // MiniDebugInfo made by binutils. `locks`: named mutexes in C programs and CPython.
    // `runbook`: snapshots compared by `gilwatch diff`, --fail-if. `prometheus`: the exporter
    // scraped over HTTP and by a real Prometheus server. `views`: the --html page in headless
    // Chromium and `gilwatch top` under tmux. `blame`: the Python code behind long holds and waits.
    // `handoffs`: forced and voluntary drops, the handoff matrix, GIL held off-CPU.
    for test in [
        "privileged",
        "blame",
        "debuginfo",
        "locks",
        "runbook",
        "prometheus",
        "views",
        "handoffs",
    ] {
        let run = shell::run(
            cargo()
                .args([
                    "test",
                    "--package",
                    "observer",
                    "--test",
                    test,
                    "--",
                    "--ignored",
                    "--test-threads=1",
                ])
                .args(args),
        );
        if let Err(e) = run {
            eprintln!("{e:#}");
            failed.push(test);
        }
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}
