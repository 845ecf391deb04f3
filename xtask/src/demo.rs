//! The demo: a GIL-contended Python program, observed by gilwatch.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::shell::{self, is_root, workspace_root};

/// An interpreter gilwatch can probe by symbol: pyenv's (not stripped) newest, else a python3
/// on PATH.
fn pick_python() -> anyhow::Result<PathBuf> {
    let mut pyenv: Vec<PathBuf> = std::fs::read_dir("/root/.pyenv/versions")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("3."))
        })
        .collect();
    pyenv.sort_by_key(|p| {
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        n.split('.')
            .map(|x| x.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    if let Some(p) = pyenv.last() {
        return Ok(p.join("bin/python3"));
    }
    let out = shell::output(Command::new("sh").args(["-c", "command -v python3"]))
        .context("no Python found: install python3")?;
    Ok(PathBuf::from(out.trim()))
}

pub fn demo(duration: &str) -> anyhow::Result<()> {
    let root = workspace_root();
    let python = pick_python()?;
    let script = root.join("scripts/workloads/contended.py");
    eprintln!(
        "demo: starting {} {} (one CPU-bound thread, two I/O threads)",
        python.display(),
        script.display()
    );
    let mut target = Command::new(&python)
        .arg(&script)
        .args(["600", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    // Wait until its threads run, so the report starts on a warm program.
    if let Some(out) = target.stdout.take() {
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).ok();
    }
    let gilwatch = root.join("target/release/gilwatch");
    let pid = target.id().to_string();
    let mut cmd = if is_root() {
        Command::new(&gilwatch)
    } else {
        let mut c = Command::new("sudo");
        c.arg(&gilwatch);
        c
    };
    cmd.args(["-p", &pid, "--duration", duration, "--interval", "2s"]);
    let result = shell::run(&mut cmd);
    target.kill().ok();
    target.wait().ok();
    result?;
    if !root.join("target/release/gilwatch").exists() {
        bail!("target/release/gilwatch was not built");
    }
    eprintln!(
        "\ndemo: done. Try it on your own program: sudo {} -p PID",
        gilwatch.display()
    );
    Ok(())
}
