//! The per-thread table of the GIL and lock reports: one row per thread, wait and hold side by
//! side, shares over the observed time.
use std::fmt::Write as _;

use super::{
    ThreadReport,
    canvas::{Canvas, styles},
    format::{fmt_ns, pct, truncate},
    lock::LockThread,
};
use crate::histogram::Summary;

/// Threads waiting less than this share of wall time are not "suffering" from the GIL (or the
/// lock): the verdict names the others, and a terminal shows their waits in red.
pub const SUFFERING_PCT: f64 = 10.0;

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
    /// Where the table goes (a terminal's width drops columns rather than wrap lines).
    pub canvas: Canvas,
}

/// The columns, in display order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Col {
    Tid,
    Thread,
    Acq,
    Cont,
    Wait,
    WaitPct,
    WaitP50,
    WaitP99,
    WaitMax,
    Hold,
    HoldPct,
    HoldP50,
    HoldP99,
    HoldMax,
}

const ALL: [Col; 14] = [
    Col::Tid,
    Col::Thread,
    Col::Acq,
    Col::Cont,
    Col::Wait,
    Col::WaitPct,
    Col::WaitP50,
    Col::WaitP99,
    Col::WaitMax,
    Col::Hold,
    Col::HoldPct,
    Col::HoldP50,
    Col::HoldP99,
    Col::HoldMax,
];

/// On a narrow terminal, what goes first: the percentiles of holds and the p99 of waits, then
/// (after names shrink to MIN_NAME) the rest of the detail; the totals and shares, which answer
/// "is it the GIL", stay.
const DROP_FIRST: [Col; 3] = [Col::HoldP99, Col::WaitP99, Col::HoldP50];
const DROP_THEN: [Col; 5] = [
    Col::HoldMax,
    Col::Cont,
    Col::Acq,
    Col::WaitMax,
    Col::WaitP50,
];

/// Narrowest the THREAD column gets before columns are dropped.
const MIN_NAME: usize = 12;

impl Col {
    fn header(self) -> &'static str {
        match self {
            Col::Tid => "TID",
            Col::Thread => "THREAD",
            Col::Acq => "ACQ",
            Col::Cont => "CONT",
            Col::Wait => "WAIT",
            Col::Hold => "HOLD",
            Col::WaitPct | Col::HoldPct => "%wall",
            Col::WaitP50 | Col::HoldP50 => "p50",
            Col::WaitP99 | Col::HoldP99 => "p99",
            Col::WaitMax | Col::HoldMax => "max",
        }
    }

    fn width(self, name_w: usize) -> usize {
        match self {
            Col::Tid => 7,
            Col::Thread => name_w,
            Col::Acq | Col::Cont => 6,
            Col::WaitPct | Col::HoldPct => 5,
            _ => 7,
        }
    }

    /// Spaces before the column: two between groups, one inside a group.
    fn gap(self) -> usize {
        match self {
            Col::Tid => 0,
            Col::Cont | Col::WaitPct | Col::WaitP50 | Col::WaitP99 | Col::WaitMax => 1,
            Col::HoldPct | Col::HoldP50 | Col::HoldP99 | Col::HoldMax => 1,
            _ => 2,
        }
    }

    fn cell(self, r: &Row<'_>, name_w: usize, dur: f64) -> String {
        match self {
            Col::Tid => r.tid.to_string(),
            Col::Thread => truncate(r.name, name_w),
            Col::Acq => r.acquisitions.to_string(),
            Col::Cont => r.contended.unwrap_or(0).to_string(),
            Col::Wait => fmt_ns(r.wait.total),
            Col::WaitPct => pct(r.wait.total as f64 * 100.0 / dur),
            Col::WaitP50 => fmt_ns(r.wait.p50),
            Col::WaitP99 => fmt_ns(r.wait.p99),
            Col::WaitMax => fmt_ns(r.wait.max),
            Col::Hold => fmt_ns(r.hold.total),
            Col::HoldPct => pct(r.hold.total as f64 * 100.0 / dur),
            Col::HoldP50 => fmt_ns(r.hold.p50),
            Col::HoldP99 => fmt_ns(r.hold.p99),
            Col::HoldMax => fmt_ns(r.hold.max),
        }
    }
}

fn line_width(cols: &[Col], name_w: usize) -> usize {
    cols.iter().map(|c| c.gap() + c.width(name_w)).sum()
}

/// The columns and the THREAD width that fit in `width`.
fn fit(mut cols: Vec<Col>, name_w: usize, width: Option<usize>) -> (Vec<Col>, usize) {
    let Some(width) = width else {
        return (cols, name_w);
    };
    let wanted_name = name_w;
    let drop = |cols: &mut Vec<Col>, order: &[Col], name_w: usize| {
        for &d in order {
            if line_width(cols, name_w) <= width {
                break;
            }
            cols.retain(|&c| c != d);
        }
    };
    let shrink = |cols: &[Col], name_w: usize, least: usize| {
        let over = line_width(cols, name_w).saturating_sub(width);
        name_w.saturating_sub(over).max(least.min(name_w))
    };
    drop(&mut cols, &DROP_FIRST, name_w);
    let name_w = shrink(&cols, name_w, MIN_NAME);
    drop(&mut cols, &DROP_THEN, name_w);
    // Narrower still: names give way to the last (a line that wraps is worse than `Thre…`);
    // room left by a dropped column goes back to the names.
    let shrunk = shrink(&cols, name_w, 6);
    let room = width.saturating_sub(line_width(&cols, shrunk));
    (cols, (shrunk + room).min(wanted_name))
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
    let wanted = ALL
        .iter()
        .copied()
        .filter(|&c| c != Col::Cont || layout.contended)
        .collect();
    let (cols, name_w) = fit(wanted, name_w, layout.canvas.width);
    let canvas = &layout.canvas;
    let line = |cell: &dyn Fn(Col) -> (String, Option<anstyle::Style>)| {
        let mut l = String::new();
        for &c in &cols {
            let (text, style) = cell(c);
            let w = c.width(name_w);
            let padded = if c == Col::Thread {
                format!("{:gap$}{text:<w$}", "", gap = c.gap())
            } else {
                format!("{:gap$}{text:>w$}", "", gap = c.gap())
            };
            match style {
                Some(s) => l.push_str(&canvas.paint(&padded, s)),
                None => l.push_str(&padded),
            }
        }
        l
    };
    let _ = writeln!(
        out,
        "{}",
        line(&|c| (c.header().to_owned(), Some(styles::HEADING)))
    );
    for r in rows.iter().take(layout.limit) {
        let suffering = r.wait.total as f64 * 100.0 / dur >= SUFFERING_PCT;
        let _ = writeln!(
            out,
            "{}",
            line(&|c| {
                let style =
                    (suffering && matches!(c, Col::Wait | Col::WaitPct)).then_some(styles::BAD);
                (c.cell(r, name_w, dur), style)
            })
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
            canvas: Canvas::PLAIN,
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

    #[test]
    fn a_narrow_terminal_drops_details_not_totals() {
        let (w, h) = (summary(500_000_000), summary(250_000_000));
        let rows = [Row {
            tid: 4_194_303,
            name: "ThreadPoolExecutor-0_12",
            acquisitions: 123_456,
            contended: None,
            wait: &w,
            hold: &h,
        }];
        let full = |width| Layout {
            name_width: 24,
            contended: false,
            limit: 10,
            canvas: Canvas {
                color: false,
                width,
            },
        };
        let wide = threads(&rows, 1_000_000_000, &full(None));
        assert!(wide.lines().next().unwrap().chars().count() > 100, "{wide}");
        for cols in [100, 80, 60, 48] {
            let text = threads(&rows, 1_000_000_000, &full(Some(cols)));
            for l in text.lines() {
                assert!(l.chars().count() <= cols, "{cols}: {l:?}\n{text}");
            }
            let head = text.lines().next().unwrap();
            for must in ["TID", "THREAD", "WAIT", "%wall", "HOLD"] {
                assert!(head.contains(must), "{cols}: {head}");
            }
            assert!(text.contains(" 500ms   50"), "{cols}: {text}");
        }
        let eighty = threads(&rows, 1_000_000_000, &full(Some(80)));
        assert!(eighty.contains("ThreadPoolExecu"), "{eighty}");
        assert!(eighty.lines().next().unwrap().contains("ACQ"), "{eighty}");
        assert!(!eighty.lines().next().unwrap().contains("p99"), "{eighty}");
        let colored = Layout {
            canvas: Canvas {
                color: true,
                width: None,
            },
            ..full(None)
        };
        let text = threads(&rows, 1_000_000_000, &colored);
        assert!(text.contains('\u{1b}'), "{text}");
    }
}
