//! `gilwatch diff BEFORE.json AFTER.json`: what changed between two saved reports, for the whole
//! process and per thread group, with a one-line verdict; `--fail-if` judged on AFTER.
use std::{collections::BTreeSet, fmt::Write as _, path::Path};

use serde::Serialize;

use super::{
    condition::{Condition, Verdict},
    figures::Figures,
    saved::SavedReport,
};
use crate::report::format::{fmt_ns, pct, truncate};

/// A summed wait that moved by less than this (points of %wall) or by less than half of itself is
/// noise between two snapshots, not a change in contention.
const WAIT_POINTS: f64 = 10.0;
const HELD_POINTS: f64 = 15.0;

#[derive(Debug, Serialize)]
pub struct Side {
    pub file: String,
    pub pid: u32,
    pub duration_ns: u64,
    pub figures: Figures,
    pub top_blamed: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GroupChange {
    /// The thread's name, a pool's with its number collapsed (`ThreadPoolExecutor-0_*`).
    pub name: String,
    /// Null when the group had no GIL activity in that report.
    pub before: Option<Figures>,
    pub after: Option<Figures>,
}

#[derive(Debug, Serialize)]
pub struct Diff {
    pub schema: u32,
    pub kind: &'static str,
    /// `contention-up`, `contention-down`, `load-up`, `load-down` or `unchanged`.
    pub change: &'static str,
    pub verdict: String,
    pub before: Side,
    pub after: Side,
    pub threads: Vec<GroupChange>,
    /// Each `--fail-if`, judged on AFTER's whole-process figures.
    pub fail_if: Vec<Verdict>,
}

impl Diff {
    pub fn failed(&self) -> bool {
        self.fail_if.iter().any(|v| v.held)
    }
}

fn side(path: &Path, r: &SavedReport) -> Side {
    Side {
        file: path.display().to_string(),
        pid: r.pid,
        duration_ns: r.duration_ns,
        figures: Figures::process(r),
        top_blamed: r.top_blamed(),
    }
}

pub fn compare(
    (before_path, before): (&Path, &SavedReport),
    (after_path, after): (&Path, &SavedReport),
    fail_if: &[Condition],
) -> Diff {
    let b = side(before_path, before);
    let a = side(after_path, after);
    let (gb, ga) = (Figures::groups(before), Figures::groups(after));
    let names: BTreeSet<&String> = gb.keys().chain(ga.keys()).collect();
    let mut threads: Vec<GroupChange> = names
        .into_iter()
        .map(|n| GroupChange {
            name: n.clone(),
            before: gb.get(n).copied(),
            after: ga.get(n).copied(),
        })
        .collect();
    // The groups that wait most now first: where the change is, for the reader who came for it.
    let wait = |f: Option<Figures>| f.map_or(0.0, |f| f.wait_pct);
    threads.sort_by(|x, y| {
        (wait(y.after).max(wait(y.before)))
            .total_cmp(&wait(x.after).max(wait(x.before)))
            .then(x.name.cmp(&y.name))
    });
    let (change, mut verdict) = verdict(&b.figures, &a.figures);
    if let (Some(tb), Some(ta)) = (&b.top_blamed, &a.top_blamed) {
        if tb != ta {
            let _ = write!(verdict, "; top blamed code now {ta} (was {tb})");
        }
    }
    let fail_if = fail_if.iter().map(|c| c.judge(&a.figures)).collect();
    Diff {
        schema: crate::report::SCHEMA,
        kind: "diff",
        change,
        verdict,
        before: b,
        after: a,
        threads,
        fail_if,
    }
}

/// What changed, in one line: contention (summed wait) first, then GIL load (held).
fn verdict(b: &Figures, a: &Figures) -> (&'static str, String) {
    let moved = |from: f64, to: f64, points: f64| {
        let d = to - from;
        if d.abs() >= points && d.abs() >= from.min(to) * 0.5 {
            d.signum()
        } else {
            0.0
        }
    };
    let wait = format!("summed wait {} → {}", pct(b.wait_pct), pct(a.wait_pct));
    let held = format!("held {} → {}", pct(b.held_pct), pct(a.held_pct));
    match (
        moved(b.wait_pct, a.wait_pct, WAIT_POINTS),
        moved(b.held_pct, a.held_pct, HELD_POINTS),
    ) {
        (w, _) if w > 0.0 => ("contention-up", format!("contention up: {wait}")),
        (w, _) if w < 0.0 => ("contention-down", format!("contention down: {wait}")),
        (_, h) if h > 0.0 => ("load-up", format!("GIL load up: {held}, {wait}")),
        (_, h) if h < 0.0 => ("load-down", format!("GIL load down: {held}, {wait}")),
        _ => (
            "unchanged",
            format!("no significant change: {wait}, {held}"),
        ),
    }
}

/// The terminal table.
pub fn render(d: &Diff) -> String {
    let mut s = String::new();
    let secs = |ns: u64| ns as f64 / 1e9;
    let _ = writeln!(
        s,
        "before: {} (PID {}, {:.1} s)\nafter:  {} (PID {}, {:.1} s)\n\n{}\n",
        d.before.file,
        d.before.pid,
        secs(d.before.duration_ns),
        d.after.file,
        d.after.pid,
        secs(d.after.duration_ns),
        d.verdict
    );
    let _ = writeln!(
        s,
        "{:<28} {:>8} {:>17} {:>17} {:>19} {:>19}",
        "THREAD", "THREADS", "HELD %wall", "WAIT %wall", "p99 WAIT", "ACQ/s"
    );
    let row = |s: &mut String, name: &str, b: Option<&Figures>, a: Option<&Figures>| {
        let pair = |f: &dyn Fn(&Figures) -> String| {
            format!("{} → {}", b.map_or("—".into(), f), a.map_or("—".into(), f))
        };
        let _ = writeln!(
            s,
            "{:<28} {:>8} {:>17} {:>17} {:>19} {:>19}",
            truncate(name, 28),
            pair(&|f| f.threads.to_string()),
            pair(&|f| pct(f.held_pct)),
            pair(&|f| pct(f.wait_pct)),
            pair(&|f| fmt_ns(f.p99_wait_ns)),
            pair(&|f| format!("{:.0}", f.acquisitions_per_sec)),
        );
    };
    row(
        &mut s,
        "(whole process)",
        Some(&d.before.figures),
        Some(&d.after.figures),
    );
    for g in &d.threads {
        row(&mut s, &g.name, g.before.as_ref(), g.after.as_ref());
    }
    if let (Some(tb), Some(ta)) = (&d.before.top_blamed, &d.after.top_blamed) {
        let _ = writeln!(s, "\ntop blamed code: {tb} → {ta}");
    }
    for v in &d.fail_if {
        let _ = writeln!(s, "\n{v}");
    }
    s
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Real reports: `gilwatch -p PID -d 3s -q --json FILE` on `contended.py 20 1 0.0001` (one
    /// I/O thread, a 0.1 ms switch interval: before) and `contended.py 20 3` (three I/O threads,
    /// the default 5 ms: after), pyenv's 3.12.
    fn fixture(name: &str) -> (PathBuf, SavedReport) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/diff")
            .join(name);
        let r = SavedReport::read(&path).unwrap();
        (path, r)
    }

    #[test]
    fn more_waiting_threads_read_as_contention_up() {
        let (pb, b) = fixture("before.json");
        let (pa, a) = fixture("after.json");
        let cond = [
            super::super::condition::parse("wait_pct > 50").unwrap(),
            super::super::condition::parse("p99_wait > 1s").unwrap(),
        ];
        let d = compare((&pb, &b), (&pa, &a), &cond);
        assert_eq!(d.change, "contention-up", "{}", d.verdict);
        assert!(
            d.verdict.starts_with("contention up: summed wait "),
            "{}",
            d.verdict
        );
        assert!(d.after.figures.wait_pct > 100.0, "{:?}", d.after.figures);
        assert!(d.before.figures.wait_pct < 50.0, "{:?}", d.before.figures);
        // The I/O pool, one thread before and three after, is one group, listed first.
        let io = &d.threads[0];
        assert_eq!(io.name, "io-*");
        assert_eq!(io.before.map(|f| f.threads), Some(1));
        assert_eq!(io.after.map(|f| f.threads), Some(3));
        assert!(io.after.unwrap().p99_wait_ns > io.before.unwrap().p99_wait_ns);
        assert!(d.failed());
        assert!(d.fail_if[0].held && !d.fail_if[1].held);
        let table = render(&d);
        assert!(
            table.contains("io-*") && table.contains("cpu-hog"),
            "{table}"
        );
        assert!(table.contains("--fail-if 'wait_pct > 50' holds"), "{table}");

        // And back again.
        let d = compare((&pa, &a), (&pb, &b), &[]);
        assert_eq!(d.change, "contention-down", "{}", d.verdict);
        assert!(!d.failed());
    }

    #[test]
    fn a_report_against_itself_is_unchanged() {
        let (p, r) = fixture("after.json");
        let d = compare((&p, &r), (&p, &r), &[]);
        assert_eq!(d.change, "unchanged", "{}", d.verdict);
        assert!(d.threads.iter().all(|g| g.before == g.after));
    }

    #[test]
    fn files_without_a_final_report_are_refused_in_one_line() {
        let e = SavedReport::parse("{\"kind\":\"interval\"}\n", "x.json").unwrap_err();
        assert!(
            e.to_string().contains("x.json has no final GIL report"),
            "{e}"
        );
        let two = "{\"kind\":\"final\",\"pid\":1,\"duration_ns\":1}\n{\"kind\":\"final\",\"pid\":2,\"duration_ns\":1}\n";
        let e = SavedReport::parse(two, "x.json").unwrap_err();
        assert!(
            e.to_string().contains("final reports of 2 processes"),
            "{e}"
        );
        let e = SavedReport::parse("not json\n", "x.json").unwrap_err();
        assert!(e.to_string().contains("line 1 is not JSON"), "{e}");
        assert_eq!(crate::error::exit_code_of(&e), crate::error::Exit::Usage);
    }

    #[test]
    fn top_blamed_code_is_read_when_present() {
        let mut r = fixture("before.json").1;
        assert_eq!(r.top_blamed(), None);
        // The blame branch's shape: stacks with their innermost frame first.
        r.blame = Some(serde_json::json!({"available": true, "holds": [{"frames": [
            {"qualname": "task", "filename": "w.py", "line": 12, "first_line": 10},
            {"qualname": "run", "filename": "w.py", "line": 40, "first_line": 38}]}]}));
        assert_eq!(r.top_blamed().as_deref(), Some("task w.py:12"));
    }
}
