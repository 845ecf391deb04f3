//! The test fixture for distribution-built interpreters: a Debian sid root with python3.13,
//! 3.14 and 3.15 as Debian ships them (stripped, static, PGO+LTO). The tests run them inside it,
//! in their own mount and PID namespaces, like containers. Made once (about two minutes, 500 MB,
//! all from Debian's packages) and kept.
use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::shell;

pub const ROOT: &str = "/var/lib/gilwatch-test/sid";
const PYTHONS: &[&str] = &["python3.13", "python3.14", "python3.15"];

pub fn ensure() -> anyhow::Result<()> {
    let root = Path::new(ROOT);
    if PYTHONS
        .iter()
        .all(|p| root.join("usr/bin").join(p).exists())
    {
        return Ok(());
    }
    if !shell::succeeds(Command::new("debootstrap").arg("--version")) {
        shell::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "debootstrap"]),
        )?;
    }
    // The machine's own Debian mirror: the only one reachable here.
    let sources =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let mirror = sources
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .map(|u| u.split_whitespace().next().unwrap_or_default().to_owned())
        .context("no URIs: line in /etc/apt/sources.list.d/debian.sources")?;
    if root.exists() && !root.join("usr/bin/apt-get").exists() {
        // A half-made root from an interrupted run: start over.
        std::fs::remove_dir_all(root).with_context(|| format!("removing the incomplete {ROOT}"))?;
    }
    if !root.join("usr/bin/apt-get").exists() {
        std::fs::create_dir_all(root)?;
        shell::run(Command::new("debootstrap").args(["--variant=minbase", "sid", ROOT, &mirror]))?;
    }
    // The registry's sid snapshot is older than its Release file's validity.
    shell::run(Command::new("chroot").args([
        ROOT,
        "apt-get",
        "-o",
        "Acquire::Check-Valid-Until=false",
        "update",
        "-qq",
    ]))?;
    shell::run(
        Command::new("chroot")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                ROOT,
                "apt-get",
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
            ])
            .args(PYTHONS),
    )
}
