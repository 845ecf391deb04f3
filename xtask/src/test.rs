//! All tests: unit tests (no privileges), then the privileged integration tests, which load the
//! real BPF programs and observe real interpreters (they are `#[ignore]`d in a plain `cargo test`).
use anyhow::bail;

use crate::shell::{self, is_root};

pub fn test(unit_only: bool, args: &[String]) -> anyhow::Result<()> {
    if !unit_only && is_root() {
        // First, so the unit tests that read the sid interpreters' files find them too.
        crate::sid::ensure()?;
    }
    // Default members only: the eBPF crate builds for the BPF target alone (through observer/build.rs).
    shell::run(shell::cargo().arg("test"))?;
    if unit_only {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the integration tests load eBPF programs: run `sudo -E cargo xtask test` (or --unit for unit tests only)"
        );
    }
    // The thread-name reader against live interpreters (one test per version).
    shell::run(shell::cargo().args([
        "test",
        "--package",
        "observer",
        "--bin",
        "gilwatch",
        "--",
        "--ignored",
    ]))?;
    // One at a time: the workloads measure time, and two CPU-bound tests on a 2-core machine
    // would measure each other. `debuginfo`: stripped interpreters with debug files and
    // MiniDebugInfo made by binutils. `locks`: named mutexes in C programs and CPython.
    for test in ["privileged", "debuginfo", "locks"] {
        shell::run(
            shell::cargo()
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
        )?;
    }
    Ok(())
}
