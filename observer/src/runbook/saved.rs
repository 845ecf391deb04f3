//! A GIL report as `gilwatch --json` wrote it, read back leniently: only the fields the
//! comparison needs, each optional where older or newer gilwatch versions may lack it.
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use crate::error::{Exit, user};

#[derive(Debug, Clone, Deserialize)]
pub struct SavedReport {
    pub pid: u32,
    pub duration_ns: u64,
    #[serde(default)]
    pub threads: Vec<SavedThread>,
    #[serde(default)]
    pub sampling: Option<SavedSampling>,
    /// The blame section, when the gilwatch that wrote it had one (read by `top_blamed`).
    #[serde(default)]
    pub blame: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SavedSampling {
    pub observed_ns: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SavedThread {
    pub name: String,
    #[serde(default)]
    pub acquisitions: u64,
    pub wait_ns: SavedSummary,
    pub hold_ns: SavedSummary,
    /// `[exclusive upper bound ns, count]`, non-empty buckets.
    #[serde(default)]
    pub wait_hist: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct SavedSummary {
    pub total: u64,
    #[serde(default)]
    pub max: u64,
}

impl SavedReport {
    /// The time shares are over: the probed time (sampled runs), else the wall time.
    pub fn observed_ns(&self) -> u64 {
        self.sampling
            .as_ref()
            .map_or(self.duration_ns, |s| s.observed_ns)
            .max(1)
    }

    /// The top blamed code, where the report has a blame section: `blame.holds[0]`'s headline
    /// (the culprit's own frame, outside the standard library), else its innermost frame, as
    /// `qualname file:line`.
    pub fn top_blamed(&self) -> Option<String> {
        let stack = self.blame.as_ref()?.get("holds")?.as_array()?.first()?;
        let frame = match stack.get("headline").filter(|h| !h.is_null()) {
            Some(h) => h,
            None => stack.get("frames")?.as_array()?.first()?,
        };
        let field = |k: &str| frame.get(k).and_then(|v| v.as_str());
        let qualname = field("qualname")?;
        Some(
            match (
                field("filename"),
                frame.get("line").and_then(|l| l.as_u64()),
            ) {
                (Some(f), Some(l)) => format!("{qualname} {f}:{l}"),
                (Some(f), None) => format!("{qualname} {f}"),
                _ => qualname.to_owned(),
            },
        )
    }

    /// The GIL report of a `--json` file: its last `final` line (interval lines and lock
    /// reports around it are skipped).
    pub fn parse(text: &str, what: &str) -> anyhow::Result<SavedReport> {
        let mut last = None;
        let mut pids = std::collections::BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                user(
                    Exit::Usage,
                    format!("{what}: line {} is not JSON ({e}); give a file written by `gilwatch --json FILE`", n + 1),
                )
            })?;
            if value.get("kind").and_then(|k| k.as_str()) == Some("final") {
                pids.insert(value.get("pid").and_then(serde_json::Value::as_u64));
                last = Some((n, value));
            }
        }
        if pids.len() > 1 {
            return Err(user(
                Exit::Usage,
                format!(
                    "{what} holds final reports of {} processes; diff compares one process's report with another's (split the file by pid)",
                    pids.len()
                ),
            ));
        }
        let (n, value) = last.ok_or_else(|| {
            user(
                Exit::Usage,
                format!("{what} has no final GIL report; write one with `gilwatch -p PID -d 10s --json FILE`"),
            )
        })?;
        serde_json::from_value(value).map_err(|e| {
            user(
                Exit::Usage,
                format!("{what}: line {} is not a gilwatch GIL report ({e})", n + 1),
            )
        })
    }

    pub fn read(path: &Path) -> anyhow::Result<SavedReport> {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| user(Exit::Usage, format!("cannot read {what}: {e}")))?;
        Self::parse(&text, &what)
    }

    /// A report of this run, read back the same way (so `--fail-if` judges a run and a diff alike).
    pub fn of(report: &impl serde::Serialize) -> anyhow::Result<SavedReport> {
        serde_json::to_value(report)
            .and_then(serde_json::from_value)
            .context("reading back the report")
    }
}
