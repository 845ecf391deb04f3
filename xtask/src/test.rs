//! All tests: unit tests (no privileges), then the privileged integration tests, which load the
//! real BPF programs and observe real interpreters (they are `#[ignore]`d in a plain `cargo test`).
use anyhow::bail;

use crate::shell::{self, is_root};

pub fn test(unit_only: bool, args: &[String]) -> anyhow::Result<()> {
    shell::run(shell::cargo().args(["test", "--workspace"]))?;
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
    // would measure each other.
    for suite in ["privileged", "locks"] {
        shell::run(
            shell::cargo()
                .args([
                    "test",
                    "--package",
                    "observer",
                    "--test",
                    suite,
                    "--",
                    "--ignored",
                    "--test-threads=1",
                ])
                .args(args),
        )?;
    }
    Ok(())
}
