//! The blame section of the human report: the stacks that held the GIL while others waited,
//! and the stacks that waited.
use std::fmt::Write as _;

use super::{
    blame::{BlameReport, BlamedStack},
    format::{fmt_ns, pct},
};

/// Frames printed per stack (innermost first).
const FRAMES: usize = 8;
/// Stacks printed per table.
const STACKS: usize = 5;

pub fn section(b: &BlameReport) -> String {
    let mut out = String::new();
    if !b.available {
        let _ = writeln!(
            out,
            "\nBlame: unavailable: {}",
            b.unavailable.as_deref().unwrap_or("unknown reason")
        );
        return out;
    }
    let share = |part: u64, all: u64| part as f64 * 100.0 / all.max(1) as f64;
    let _ = writeln!(
        out,
        "\nBlame: code holding the GIL when a waiter's timed wait expired ({} samples; stacks with a hold \
         of {} or more; blamed {} = {} of all hold time)",
        b.samples,
        fmt_ns(b.min_ns),
        fmt_ns(b.hold_blamed_ns),
        pct(share(b.hold_blamed_ns, b.hold_total_ns))
    );
    if b.holds.is_empty() {
        let _ = writeln!(out, "  no hold at or over the threshold");
    }
    for (i, s) in b.holds.iter().take(STACKS).enumerate() {
        let _ = writeln!(
            out,
            "  #{} {} of hold · total {} · {} holds · max {} · caused {} of waiting · {}",
            i + 1,
            pct(s.share_pct),
            fmt_ns(s.total_ns),
            s.count,
            fmt_ns(s.max_ns),
            fmt_ns(s.caused_wait_ns),
            threads(s)
        );
        frames(&mut out, s);
    }
    let _ = writeln!(
        out,
        "\nBlame: code waiting for the GIL (waits that timed out at least once; blamed {} = {} of all wait time)",
        fmt_ns(b.wait_blamed_ns),
        pct(share(b.wait_blamed_ns, b.wait_total_ns))
    );
    if b.waits.is_empty() {
        let _ = writeln!(out, "  no wait at or over the threshold");
    }
    for (i, s) in b.waits.iter().take(STACKS).enumerate() {
        let _ = writeln!(
            out,
            "  #{} {} of wait · total {} · {} waits · max {} · {}",
            i + 1,
            pct(s.share_pct),
            fmt_ns(s.total_ns),
            s.count,
            fmt_ns(s.max_ns),
            threads(s)
        );
        frames(&mut out, s);
    }
    if b.lost > 0 {
        let _ = writeln!(
            out,
            "  WARNING: {} blame events lost or stacks unreadable: blame is incomplete",
            b.lost
        );
    }
    let _ = writeln!(out, "  native frames: {}", b.native_frames);
    out
}

fn threads(s: &BlamedStack) -> String {
    let names: Vec<String> = s
        .threads
        .iter()
        .take(3)
        .map(|t| format!("{} ({})", t.name, t.tid))
        .collect();
    let more = s.threads.len().saturating_sub(3);
    if more > 0 {
        format!("threads: {} +{more}", names.join(", "))
    } else {
        format!("threads: {}", names.join(", "))
    }
}

fn frames(out: &mut String, s: &BlamedStack) {
    if s.frames.is_empty() {
        let _ = writeln!(out, "      (no Python frame)");
    }
    for f in s.frames.iter().take(FRAMES) {
        let _ = writeln!(out, "      {}", f.label());
    }
    if s.frames.len() > FRAMES || s.truncated {
        let _ = writeln!(out, "      …");
    }
}

/// One line for the verdict: the code behind the most hold time.
pub fn top_code(b: &BlameReport) -> Option<String> {
    let s = b.holds.first()?;
    let f = s.headline()?;
    Some(format!(
        "Top code: {} held it {} of all hold time ({} holds, max {}), making others wait {}.",
        f.label(),
        pct(s.share_pct),
        s.count,
        fmt_ns(s.max_ns),
        fmt_ns(s.caused_wait_ns)
    ))
}
