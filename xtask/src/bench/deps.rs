//! What the benchmark needs besides gilwatch, installed idempotently: bpftrace, wrk and a C
//! compiler (Debian packages), Flask and gunicorn (PyPI, into bench/venv, which git ignores), the
//! lock loop (compiled into target/bench).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::shell::{self, workspace_root};

pub struct Env {
    pub gilwatch: PathBuf,
    /// The interpreter the workloads run on (with symbols: pyenv's).
    pub python: PathBuf,
    pub python_version: String,
    /// Its libpython, where bpftrace's probes go.
    pub libpython: PathBuf,
    pub venv: PathBuf,
    pub scripts: PathBuf,
    /// scripts/bench/lock_loop.c, compiled.
    pub lock_loop: PathBuf,
}

pub fn ensure(python: &Path) -> anyhow::Result<Env> {
    let missing: Vec<&str> = [("bpftrace", "bpftrace"), ("wrk", "wrk"), ("cc", "gcc")]
        .into_iter()
        .filter(|(b, _)| {
            !shell::succeeds(Command::new("sh").args(["-c", &format!("command -v {b}")]))
        })
        .map(|(_, package)| package)
        .collect();
    if !missing.is_empty() {
        shell::run(Command::new("apt-get").arg("update"))?;
        shell::run(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if !python.exists() {
        bail!(
            "{} not found: the benchmark needs a CPython with symbols (pyenv's); pass --python",
            python.display()
        );
    }
    let root = workspace_root();
    let venv = root.join("bench/venv");
    if !venv.join("bin/gunicorn").exists() || !venv.join("bin/flask").exists() {
        shell::run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
        shell::run(
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", "flask", "gunicorn"]),
        )?;
    }
    let ask = |code: &str| {
        shell::output(Command::new(python).args(["-c", code])).map(|s| s.trim().to_owned())
    };
    let python_version = ask("import platform; print(platform.python_version())")
        .context("asking the benchmark's Python for its version")?;
    let libpython = ask(
        "import sysconfig, os; print(os.path.join(sysconfig.get_config_var('LIBDIR'), sysconfig.get_config_var('INSTSONAME')))",
    )
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .context("the benchmark's Python has no shared libpython (bpftrace's probes go there)")?;
    crate::build()?;
    let scripts = root.join("scripts/bench");
    let lock_loop = root.join("target/bench/lock_loop");
    std::fs::create_dir_all(root.join("target/bench")).context("creating target/bench")?;
    shell::run(
        Command::new("cc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&lock_loop)
            .arg(scripts.join("lock_loop.c"))
            .arg("-lpthread"),
    )?;
    Ok(Env {
        gilwatch: root.join("target/release/gilwatch"),
        python: python.to_owned(),
        python_version,
        libpython,
        venv,
        scripts,
        lock_loop,
    })
}
