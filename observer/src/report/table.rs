//! The per-thread table of the GIL and lock reports: one row per thread, wait and hold side by
//! side, shares over the observed time.
use std::fmt::Write as _;

use super::{
    ThreadReport,
    format::{fmt_ns, pct, truncate},
    lock::LockThread,
};
use crate::histogram::Summary;

/// One thread's row.
pub struct Row<'a> {
    pub tid: u32,
    pub name: &'a str,
    pub acquisitions: u64,
    /// Acquisitions that had to wait (the lock table's CONT column).
    pub contended: Option<u64>,
    pub wait: &'a Summary,
    pub hold: &'a Summary,
}

impl<'a> From<&'a ThreadReport> for Row<'a> {
    fn from(t: &'a ThreadReport) -> Self {
        Row {
            tid: t.tid,
            name: &t.name,
            acquisitions: t.acquisitions,
            contended: None,
            wait: &t.wait_ns,
            hold: &t.hold_ns,
        }
    }
}

impl<'a> From<&'a LockThread> for Row<'a> {
    fn from(t: &'a LockThread) -> Self {
        Row {
            tid: t.tid,
            name: &t.name,
            acquisitions: t.counts.acquisitions,
            contended: Some(t.counts.contended),
            wait: &t.times.wait_ns,
            hold: &t.times.hold_ns,
        }
    }
}

/// How a table is laid out.
pub struct Layout {
    /// Longest thread name shown; longer ones end in `…`.
    pub name_width: usize,
    /// Show the CONT (contended acquisitions) column.
    pub contended: bool,
    /// Rows shown; the rest are counted in a last line.
    pub limit: usize,
}

/// The table; `observed_ns` is what `%wall` is a share of.
pub fn threads(rows: &[Row<'_>], observed_ns: u64, layout: &Layout) -> String {
    let mut out = String::new();
    let name_w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(6)
        .clamp(6, layout.name_width.max(6));
    let dur = observed_ns.max(1) as f64;
    let cont = |v: &dyn std::fmt::Display| {
        if layout.contended {
            format!(" {v:>6}")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        out,
        "{:>7}  {:<name_w$}  {:>6}{}  {:>7} {:>5} {:>7} {:>7} {:>7}  {:>7} {:>5} {:>7} {:>7} {:>7}",
        "TID",
        "THREAD",
        "ACQ",
        cont(&"CONT"),
        "WAIT",
        "%wall",
        "p50",
        "p99",
        "max",
        "HOLD",
        "%wall",
        "p50",
        "p99",
        "max"
    );
    for r in rows.iter().take(layout.limit) {
        let _ = writeln!(
            out,
            "{:>7}  {:<name_w$}  {:>6}{}  {:>7} {:>5} {:>7} {:>7} {:>7}  {:>7} {:>5} {:>7} {:>7} {:>7}",
            r.tid,
            truncate(r.name, name_w),
            r.acquisitions,
            cont(&r.contended.unwrap_or(0)),
            fmt_ns(r.wait.total),
            pct(r.wait.total as f64 * 100.0 / dur),
            fmt_ns(r.wait.p50),
            fmt_ns(r.wait.p99),
            fmt_ns(r.wait.max),
            fmt_ns(r.hold.total),
            pct(r.hold.total as f64 * 100.0 / dur),
            fmt_ns(r.hold.p50),
            fmt_ns(r.hold.p99),
            fmt_ns(r.hold.max),
        );
    }
    if rows.len() > layout.limit {
        let _ = writeln!(
            out,
            "{:>7}  … {} more threads (see --json for all)",
            "",
            rows.len() - layout.limit
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(total: u64) -> Summary {
        Summary {
            count: 1,
            total,
            p50: total,
            p90: total,
            p99: total,
            max: total,
        }
    }

    #[test]
    fn columns_line_up_and_extra_rows_are_counted() {
        let (w, h) = (summary(500_000_000), summary(250_000_000));
        let rows: Vec<Row<'_>> = ["MainThread", "worker-with-a-very-long-name", "w2"]
            .iter()
            .enumerate()
            .map(|(i, name)| Row {
                tid: 100 + i as u32,
                name,
                acquisitions: 7,
                contended: Some(3),
                wait: &w,
                hold: &h,
            })
            .collect();
        let layout = Layout {
            name_width: 20,
            contended: true,
            limit: 2,
        };
        let text = threads(&rows, 1_000_000_000, &layout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("ACQ   CONT"), "{text}");
        assert!(lines[2].contains("worker-with-a-very-…"), "{text}");
        assert!(lines[1].contains(" 500ms   50%"), "{text}");
        assert!(
            lines[3].ends_with("… 1 more threads (see --json for all)"),
            "{text}"
        );
        let widths: Vec<usize> = lines[..3].iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&x| x == widths[0]), "{text}");
        let no_cont = Layout {
            contended: false,
            ..layout
        };
        assert!(!threads(&rows, 1, &no_cont).contains("CONT"));
    }
}
