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
    let f = s.headline.as_ref()?;
    Some(format!(
        "Top code: {} held it {} of all hold time ({} holds, max {}), making others wait {}.",
        f.label(),
        pct(s.share_pct),
        s.count,
        fmt_ns(s.max_ns),
        fmt_ns(s.caused_wait_ns)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::blame::{BlamedFrame, BlamedThread};

    fn frame(q: &str, f: &str, line: u32) -> BlamedFrame {
        BlamedFrame {
            qualname: q.to_owned(),
            filename: f.to_owned(),
            line: Some(line),
            first_line: Some(1),
        }
    }

    fn report(holds: Vec<BlamedStack>) -> BlameReport {
        BlameReport {
            available: true,
            unavailable: None,
            min_ns: 5_000_000,
            native_frames: "not collected".to_owned(),
            hold_total_ns: 100_000_000,
            hold_blamed_ns: 60_000_000,
            wait_total_ns: 0,
            wait_blamed_ns: 0,
            samples: 12,
            lost: 0,
            holds,
            waits: Vec::new(),
        }
    }

    #[test]
    fn the_verdict_names_the_first_frame_outside_the_standard_library() {
        let s = BlamedStack {
            frames: vec![
                frame("iterencode", "/usr/lib/python3.12/json/encoder.py", 258),
                frame("serialize_report", "/srv/app/metrics.py", 61),
                frame("run", "/usr/lib/python3.12/threading.py", 1010),
            ],
            truncated: false,
            count: 3,
            total_ns: 60_000_000,
            max_ns: 30_000_000,
            samples: 12,
            share_pct: 60.0,
            caused_wait_ns: 80_000_000,
            threads: vec![BlamedThread {
                tid: 7,
                name: "metrics".to_owned(),
                total_ns: 60_000_000,
            }],
            headline: None,
        };
        let s = BlamedStack {
            headline: s.find_headline().cloned(),
            ..s
        };
        let r = report(vec![s]);
        let line = top_code(&r).expect("a top line");
        assert!(
            line.starts_with("Top code: serialize_report (/srv/app/metrics.py:61) held it 60%"),
            "{line}"
        );
        let text = section(&r);
        assert!(text.contains("#1 60% of hold"), "{text}");
        assert!(text.contains("metrics (7)"), "{text}");
        assert!(
            text.contains("iterencode (/usr/lib/python3.12/json/encoder.py:258)"),
            "{text}"
        );
    }

    #[test]
    fn empty_and_unavailable_reports_render_without_a_top_line() {
        let r = report(Vec::new());
        assert!(top_code(&r).is_none());
        assert!(section(&r).contains("no hold at or over the threshold"));
        let off = BlameReport {
            available: false,
            unavailable: Some("turned off (--no-blame)".to_owned()),
            ..report(Vec::new())
        };
        assert_eq!(
            section(&off).trim(),
            "Blame: unavailable: turned off (--no-blame)"
        );
    }
}
