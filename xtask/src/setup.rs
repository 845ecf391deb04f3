//! Installs what this machine lacks to build and test gilwatch, idempotently.
//!
//! The usual aya recipe (nightly + `-Z build-std`) needs rust-src, which cannot be had here, so
//! the kernel programs are built with Debian's `rustc-web`, whose `libstd-rust-web-dev-bpf` ships
//! a prebuilt `core` for the BPF target; rustup knows that compiler as the `debian-bpf` toolchain.
use std::{path::Path, process::Command};

use anyhow::bail;

use crate::shell::{self, is_root, output, succeeds};

/// Debian packages: LLVM 22 for bpf-linker, Debian's Rust with its BPF `core`, bpftool (tests
/// use it to prove no probe outlives gilwatch), gcc (tests compile C programs), binutils and
/// xz-utils (tests strip interpreters and build debug files and MiniDebugInfo), python3 (Debian's
/// stripped CPython: the lock tests watch a process whose GIL is probed without symbols),
/// prometheus (a real server scrapes the exporter in the tests; installs without prompts).
/// chromium (the --html page is rendered headless) and tmux (`gilwatch top` runs in a terminal).
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "bpftool",
    "gcc",
    "libc6-dev",
    "binutils",
    "xz-utils",
    "python3",
    "prometheus",
    "chromium",
    "tmux",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const TOOLCHAIN: &str = "debian-bpf";

pub fn setup() -> anyhow::Result<()> {
    apt_packages()?;
    bpf_linker()?;
    toolchain()?;
    eprintln!("setup: all build requirements are present");
    Ok(())
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}: run `sudo cargo xtask setup` (or apt-get install them)",
            missing.join(" ")
        );
    }
    shell::run(Command::new("apt-get").args(["update", "-qq"]))?;
    shell::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

fn bpf_linker() -> anyhow::Result<()> {
    let have = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    // Built against Debian's LLVM 22; without LLVM_PREFIX its build looks in /usr/lib64.
    shell::run(
        shell::cargo()
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
}

fn toolchain() -> anyhow::Result<()> {
    let list = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if list.lines().any(|l| l.starts_with(TOOLCHAIN))
        && succeeds(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--version"]))
    {
        return Ok(());
    }
    if !Path::new("/usr/lib/rustlib/bpfel-unknown-none").exists() {
        bail!(
            "Debian's BPF core library is missing (/usr/lib/rustlib/bpfel-unknown-none): install libstd-rust-web-dev-bpf"
        );
    }
    shell::run(Command::new("rustup").args(["toolchain", "link", TOOLCHAIN, "/usr"]))
}
