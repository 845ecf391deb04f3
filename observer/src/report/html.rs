//! `--html FILE`: the report as one self-contained page, to attach to a ticket or mail to a
//! colleague. Everything is inline (CSS, SVG charts drawn here), nothing is fetched, no script
//! runs. Thread names, paths and lock symbols come from the target and are untrusted: maud
//! escapes every value spliced into the page; only the stylesheet below is written raw.
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{
    Report, ThreadReport,
    bars::rows,
    blame::{BlameReport, BlamedStack},
    canvas::Canvas,
    format::{fmt_ns, memory_line, pct},
    lock::{LockEntry, LockReport},
    lock_terminal::label,
    table::SUFFERING_PCT,
    terminal,
};
use crate::histogram::Summary;

/// Threads that get their histograms drawn (the table lists all of them).
const CHARTED_THREADS: usize = 12;
/// Rows of the per-thread table.
const TABLE_ROWS: usize = 200;

const CSS: &str = r#"
:root { --wait: #d64545; --hold: #2f6fd6; --ink: #1d2330; --mute: #667085; --line: #e4e7ec; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1180px; padding: 24px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin: 14px 0 4px; }
.meta { color: var(--mute); margin: 2px 0; overflow-wrap: anywhere; }
.verdict { padding: 12px 16px; border-radius: 6px; margin: 14px 0; font-size: 15px; }
.verdict.bad { background: #fdecec; border-left: 5px solid var(--wait); }
.verdict.good { background: #eaf6ec; border-left: 5px solid #2e9e4f; }
.verdict p { margin: 2px 0; }
.figures { display: flex; gap: 14px; flex-wrap: wrap; margin: 12px 0; }
.figure { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.figure b { display: block; font-size: 22px; }
.figure span { color: var(--mute); font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; text-align: right; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: #f6f7f9; font-weight: 600; }
th[colspan] { text-align: center; }
figure { margin: 0; }
td.name, th.name { text-align: left; white-space: normal; overflow-wrap: anywhere; max-width: 280px; }
td.suffering { color: var(--wait); font-weight: 600; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 10px 24px; }
svg text { font: 11px system-ui, sans-serif; fill: var(--ink); }
svg .wait { fill: var(--wait); } svg .hold { fill: var(--hold); } svg .track { fill: #f0f2f5; }
svg .axis { stroke: #c8ccd3; stroke-width: 1; }
.legend i { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; border-radius: 2px; }
.later { border: 2px dashed #c8ccd3; border-radius: 6px; padding: 10px 16px; color: var(--mute); }
pre { background: #f6f7f9; padding: 8px; overflow-x: auto; }
footer { margin-top: 32px; color: var(--mute); font-size: 12px; }
"#;

/// The page for a run: the GIL report, the lock report, or both.
pub fn render(gil: Option<&Report>, locks: Option<&LockReport>) -> String {
    let title = match (gil, locks) {
        (Some(r), _) => format!(
            "gilwatch · PID {} · CPython {}",
            r.pid, r.interpreter.version
        ),
        (None, Some(l)) => format!("gilwatch · PID {} · locks", l.pid),
        (None, None) => "gilwatch".to_owned(),
    };
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { (title) }
                @if let Some(r) = gil { (gil_sections(r)) }
                @if let Some(l) = locks { (lock_sections(l)) }
                footer { "Written by gilwatch " (env!("CARGO_PKG_VERSION")) ". This page is self-contained: it loads nothing from anywhere." }
            }
        }
    };
    page.into_string()
}

fn gil_sections(r: &Report) -> Markup {
    let verdict = terminal::verdict(r, &Canvas::PLAIN);
    let suffering = !r.threads.is_empty() && verdict.starts_with("Verdict: GIL contention");
    let observed = r.sampling.observed_ns.max(1) as f64;
    html! {
        section id="summary" {
            p.meta { "Interpreter " code { (r.interpreter.path) } " · strategy " (r.interpreter.strategy.to_string())
                " · probes " (r.interpreter.symbols.join(", ")) }
            p.meta { "Observed " (fmt_ns(r.duration_ns)) " · ended: " (terminal::ended(r)) }
            @for line in terminal::cost_line(r, &Canvas::PLAIN).lines() { p.meta { (line) } }
            @if r.lost_events > 0 {
                p.verdict.bad { "WARNING: " (r.lost_events) " probe events were lost (kernel map full): numbers are incomplete" }
            }
            div.figures {
                div.figure { b { (pct(r.gil.held_pct)) } span { "of wall time some thread held the GIL" } }
                div.figure { b { (pct(r.gil.wait_pct)) } span { "of wall time threads waited (summed)" } }
                div.figure { b { (format!("{:.0}", r.gil.acquisitions_per_sec)) } span { "acquisitions per second" } }
                div.figure { b { (r.threads.len()) } span { "threads took the GIL" } }
            }
            @if r.threads.is_empty() {
                div.verdict.good { p { "No GIL activity seen: no thread took or released the GIL while gilwatch watched." } }
            } @else {
                div.verdict.(if suffering { "bad" } else { "good" }) {
                    @for line in verdict.lines() { p { (line.trim()) } }
                }
            }
        }
        @if !r.threads.is_empty() {
            section id="threads" {
                h2 { "Threads" }
                p.legend { "Share of the observed time each thread spent" i style="background:var(--wait)" {} "waiting for the GIL"
                    i style="background:var(--hold)" {} "holding it" }
                (share_chart(&r.threads, observed))
                (thread_table(&r.threads, observed))
            }
            section id="histograms" {
                h2 { "Wait and hold histograms" }
                p.meta { "Each span counted once, in log-scale buckets (as the terminal report draws them); the threads that waited most first." }
                div.charts {
                    @for t in r.threads.iter().take(CHARTED_THREADS) {
                        @let who = format!("{} (tid {})", t.name, t.tid);
                        @if t.wait_ns.count > 0 { (histogram_chart("wait", &format!("GIL wait · {who}"), &t.wait_ns, &t.wait_hist)) }
                        @if t.hold_ns.count > 0 { (histogram_chart("hold", &format!("GIL hold · {who}"), &t.hold_ns, &t.hold_hist)) }
                    }
                }
                @if r.threads.len() > CHARTED_THREADS {
                    p.meta { (r.threads.len() - CHARTED_THREADS) " more threads are in the table above and in --json." }
                }
            }
        }
        @if let Some(b) = &r.blame {
            (blame_section(b))
        }
        // A timeline of a short window goes here once the report model carries one (`--trace`).
        section id="timeline" .later {
            h2 { "Timeline" }
            p { "Reserved: a timeline of who held and who waited for the GIL in a short window will be shown here when gilwatch records one." }
        }
        p.meta { (memory_line(r.kernel_memory_bytes)) }
    }
}

/// One horizontal bar per thread: wait and hold as shares of the observed time.
fn share_chart(threads: &[ThreadReport], observed: f64) -> Markup {
    let shown: Vec<&ThreadReport> = threads.iter().take(CHARTED_THREADS * 4).collect();
    let (label_w, bar_w, row_h) = (200.0, 560.0, 22.0);
    let height = row_h * shown.len() as f64 + 24.0;
    let width = label_w + bar_w + 170.0;
    html! {
        svg.shares width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img"
            aria-label="wait and hold per thread" {
            @for (i, t) in shown.iter().enumerate() {
                @let y = i as f64 * row_h;
                @let wait = (t.wait_ns.total as f64 / observed).min(1.0);
                @let hold = (t.hold_ns.total as f64 / observed).min(1.0);
                text x=(label_w - 8.0) y=(y + 15.0) text-anchor="end" { (short(&t.name, 28)) }
                rect.track x=(label_w) y=(y + 3.0) width=(bar_w) height=(row_h - 6.0) {}
                rect.wait x=(label_w) y=(y + 3.0) width=(wait * bar_w) height=((row_h - 6.0) / 2.0) {
                    title { (t.name) " waited " (pct(wait * 100.0)) }
                }
                rect.hold x=(label_w) y=(y + row_h / 2.0) width=(hold * bar_w) height=((row_h - 6.0) / 2.0) {
                    title { (t.name) " held " (pct(hold * 100.0)) }
                }
                text x=(label_w + bar_w + 6.0) y=(y + 15.0) { "wait " (pct(wait * 100.0)) " · hold " (pct(hold * 100.0)) }
            }
            @let axis_y = row_h * shown.len() as f64 + 4.0;
            line.axis x1=(label_w) y1=(axis_y) x2=(label_w + bar_w) y2=(axis_y) {}
            @for q in [0, 25, 50, 75, 100] {
                text x=(label_w + bar_w * q as f64 / 100.0) y=(axis_y + 14.0) text-anchor="middle" { (q) "%" }
            }
        }
    }
}

/// Stacks listed per blame table, and frames per stack (innermost first).
const BLAME_STACKS: usize = 8;
const BLAME_FRAMES: usize = 12;

/// Which code held the GIL while others waited, and which code waited (report/blame.rs).
fn blame_section(b: &BlameReport) -> Markup {
    let share = |part: u64, all: u64| part as f64 * 100.0 / all.max(1) as f64;
    html! {
        section id="blame" {
            h2 { "Blame: which code held the GIL while others waited" }
            @if !b.available {
                p.meta { "Unavailable: " (b.unavailable.as_deref().unwrap_or("unknown reason")) }
            } @else {
                p.meta {
                    "Stacks sampled when a waiter's timed wait for the GIL expired (" (b.samples) " samples); stacks with a hold of "
                    (fmt_ns(b.min_ns)) " or more. Blamed " (fmt_ns(b.hold_blamed_ns)) " = "
                    (pct(share(b.hold_blamed_ns, b.hold_total_ns))) " of all hold time. Native frames: " (b.native_frames)
                }
                @if b.lost > 0 {
                    p.meta { "Warning: " (b.lost) " blame events lost or stacks unreadable: blame is incomplete." }
                }
                (blame_table("hold", &b.holds, true))
                h3 { "Code waiting for the GIL" }
                p.meta { "Waits that timed out at least once, by the waiter's stack when it asked. Blamed "
                    (fmt_ns(b.wait_blamed_ns)) " = " (pct(share(b.wait_blamed_ns, b.wait_total_ns))) " of all wait time." }
                (blame_table("wait", &b.waits, false))
            }
        }
    }
}

fn blame_table(kind: &str, stacks: &[BlamedStack], holds: bool) -> Markup {
    html! {
        @if stacks.is_empty() {
            p.meta { "No " (kind) " at or over the threshold." }
        } @else {
            table.blame {
                thead { tr {
                    th { "#" } th { "code (innermost frame first)" } th.num { "share" } th.num { "total" }
                    th.num { "count" } th.num { "max" }
                    @if holds { th.num { "caused waiting" } }
                    th { "threads" }
                } }
                tbody {
                    @for (i, s) in stacks.iter().take(BLAME_STACKS).enumerate() {
                        tr {
                            td { (i + 1) }
                            td {
                                @if let Some(h) = &s.headline { b { (h.label()) } }
                                details {
                                    summary { (s.frames.len()) " frames" @if s.truncated { " (truncated)" } }
                                    ol {
                                        @for f in s.frames.iter().take(BLAME_FRAMES) { li { code { (f.label()) } } }
                                    }
                                }
                            }
                            td.num {
                                svg width="60" height="10" role="img" aria-label=(pct(s.share_pct)) {
                                    rect.track x="0" y="0" width="60" height="10" {}
                                    rect.(kind) x="0" y="0" width=(s.share_pct.clamp(0.0, 100.0) * 0.6) height="10" {}
                                }
                                " " (pct(s.share_pct))
                            }
                            td.num { (fmt_ns(s.total_ns)) }
                            td.num { (s.count) }
                            td.num { (fmt_ns(s.max_ns)) }
                            @if holds { td.num { (fmt_ns(s.caused_wait_ns)) } }
                            td { @for (j, t) in s.threads.iter().take(4).enumerate() {
                                @if j > 0 { ", " } (t.name) " (" (t.tid) ")"
                            } @if s.threads.len() > 4 { " +" (s.threads.len() - 4) } }
                        }
                    }
                }
            }
        }
    }
}

fn thread_table(threads: &[ThreadReport], observed: f64) -> Markup {
    let share = |ns: u64| ns as f64 * 100.0 / observed;
    html! {
        table.threads {
            thead {
                tr { th rowspan="2" { "TID" } th.name rowspan="2" { "Thread" } th rowspan="2" { "Acquisitions" }
                     th colspan="5" { "Wait" } th colspan="5" { "Hold" } }
                tr { @for _ in 0..2 { th { "total" } th { "%wall" } th { "p50" } th { "p99" } th { "max" } } }
            }
            tbody {
                @for t in threads.iter().take(TABLE_ROWS) {
                    @let suffering = share(t.wait_ns.total) >= SUFFERING_PCT;
                    tr {
                        td { (t.tid) }
                        td.name { (t.name) @if t.python_name.is_some() && t.os_name != t.name { span.meta { " (" (t.os_name) ")" } } }
                        td { (t.acquisitions) }
                        td.suffering[suffering] { (fmt_ns(t.wait_ns.total)) }
                        td.suffering[suffering] { (pct(share(t.wait_ns.total))) }
                        (summary_cells(&t.wait_ns))
                        td { (fmt_ns(t.hold_ns.total)) }
                        td { (pct(share(t.hold_ns.total))) }
                        (summary_cells(&t.hold_ns))
                    }
                }
            }
        }
        @if threads.len() > TABLE_ROWS {
            p.meta { (threads.len() - TABLE_ROWS) " more threads: see --json." }
        }
    }
}

fn summary_cells(s: &Summary) -> Markup {
    html! { td { (fmt_ns(s.p50)) } td { (fmt_ns(s.p99)) } td { (fmt_ns(s.max)) } }
}

/// A histogram as horizontal bars, one row per bucket group.
/// `kind`: `wait` or `hold` (the colour); `title`: what was measured, of whom.
fn histogram_chart(kind: &str, title: &str, s: &Summary, hist: &[(u64, u64)]) -> Markup {
    let (at_once, groups) = rows(hist);
    let mut lines: Vec<(String, u64)> = Vec::new();
    if at_once > 0 {
        lines.push(("0 (at once)".to_owned(), at_once));
    }
    lines.extend(
        groups
            .iter()
            .map(|&(lo, hi, n)| (format!("{} – {}", fmt_ns(lo), fmt_ns(hi)), n)),
    );
    let peak = lines.iter().map(|l| l.1).max().unwrap_or(1).max(1) as f64;
    let (label_w, bar_w, row_h) = (130.0, 300.0, 17.0);
    let height = row_h * lines.len() as f64 + 4.0;
    let width = label_w + bar_w + 70.0;
    html! {
        figure.histogram {
            h3 { (title) }
            p.meta { "n=" (s.count) " · p50 " (fmt_ns(s.p50)) " · p99 " (fmt_ns(s.p99)) " · max " (fmt_ns(s.max)) }
            svg width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img"
                aria-label=(format!("histogram: {title}")) {
                @for (i, (range, n)) in lines.iter().enumerate() {
                    @let y = i as f64 * row_h;
                    text x=(label_w - 6.0) y=(y + 12.0) text-anchor="end" { (range) }
                    rect class=(kind) x=(label_w) y=(y + 2.0) width=((*n as f64 / peak * bar_w).max(if *n > 0 { 1.0 } else { 0.0 })) height=(row_h - 4.0) {
                        title { (range) ": " (n) }
                    }
                    text x=(label_w + (*n as f64 / peak * bar_w) + 4.0) y=(y + 12.0) { (n) }
                }
            }
        }
    }
}

fn lock_sections(l: &LockReport) -> Markup {
    let observed = l.duration_ns.max(1) as f64;
    html! {
        section id="locks" {
            h2 { "Locks" (if l.mode == "discover" { " (every contended mutex)" } else { "" }) }
            p.meta { "Probes: " (l.probes.join(", ")) " · observed " (fmt_ns(l.duration_ns)) }
            @if l.lost_events > 0 {
                p.verdict.bad { "WARNING: " (l.lost_events) " lock events were lost (kernel map full): numbers are incomplete" }
            }
            @if l.locks.is_empty() { p { "No lock was contended while gilwatch watched." } }
            @for lock in &l.locks { (lock_block(lock, observed)) }
        }
    }
}

fn lock_block(lock: &LockEntry, observed: f64) -> Markup {
    let share = |ns: u64| ns as f64 * 100.0 / observed;
    html! {
        h3 { (lock.kind) " " code { (label(lock)) } }
        p.meta { "held " (pct(lock.held_pct)) " of wall time · threads waited " (pct(lock.wait_pct))
            " · " (lock.counts.acquisitions) " acquisitions, " (lock.counts.contended) " contended" }
        @if !lock.threads.is_empty() {
            table {
                thead { tr { th { "TID" } th.name { "Thread" } th { "Acq" } th { "Contended" }
                    th { "Wait" } th { "%wall" } th { "p50" } th { "p99" } th { "max" }
                    th { "Hold" } th { "%wall" } th { "p50" } th { "p99" } th { "max" } } }
                tbody {
                    @for t in lock.threads.iter().take(TABLE_ROWS) {
                        tr {
                            td { (t.tid) } td.name { (t.name) } td { (t.counts.acquisitions) } td { (t.counts.contended) }
                            td { (fmt_ns(t.times.wait_ns.total)) } td { (pct(share(t.times.wait_ns.total))) }
                            (summary_cells(&t.times.wait_ns))
                            td { (fmt_ns(t.times.hold_ns.total)) } td { (pct(share(t.times.hold_ns.total))) }
                            (summary_cells(&t.times.hold_ns))
                        }
                    }
                }
            }
        }
        div.charts {
            @if lock.times.wait_ns.count > 0 { (histogram_chart("wait", &format!("wait · {}", label(lock)), &lock.times.wait_ns, &lock.times.wait_hist)) }
            @if lock.times.hold_ns.count > 0 { (histogram_chart("hold", &format!("hold · {}", label(lock)), &lock.times.hold_ns, &lock.times.hold_hist)) }
        }
        @for site in &lock.call_sites {
            p.meta { "call site: " (site.acquisitions) " acquisitions, " (site.contended) " contended, waited " (fmt_ns(site.wait_ns)) }
            pre { @for f in &site.frames { (f) "\n" } }
        }
    }
}

/// At most `n` characters (SVG text does not wrap; the table has the full name).
fn short(s: &str, n: usize) -> String {
    super::format::truncate(s, n)
}

/// The `--html` file, created before anything is attached (a path that cannot be written is a
/// usage error then, not a lost report at the end).
pub struct HtmlFile {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl HtmlFile {
    pub fn create(path: &std::path::Path) -> anyhow::Result<HtmlFile> {
        let file = std::fs::File::create(path).map_err(|e| {
            crate::error::user(
                crate::error::Exit::Usage,
                format!("cannot write --html {}: {e}", path.display()),
            )
        })?;
        Ok(HtmlFile {
            file,
            path: path.to_owned(),
        })
    }

    /// Writes the page for the run's reports.
    pub fn write(mut self, gil: Option<&Report>, locks: Option<&LockReport>) -> anyhow::Result<()> {
        use std::io::Write as _;
        anyhow::Context::with_context(self.file.write_all(render(gil, locks).as_bytes()), || {
            format!("writing --html {}", self.path.display())
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::{
        collect::{Snapshot, ThreadSample},
        gil::plan::ChosenStrategy,
        histogram::Distribution,
        probe::cost::TrapCosts,
        report::{EndReason, InterpreterInfo, RunInfo, build},
    };

    /// A report of two threads, one named to break out of the page.
    pub fn report(hostile: &str) -> Report {
        let info = RunInfo {
            pid: 4242,
            ns_pid: None,
            command: None,
            exit_code: None,
            interpreter: InterpreterInfo {
                path: "/usr/lib/libpython3.13.so </title><script>".into(),
                version: "3.13.0".into(),
                strategy: ChosenStrategy::Symtab,
                symbols: vec!["take_gil".into(), "drop_gil".into()],
                gil_location: None,
                free_threaded: false,
                symbols_from: None,
                debug_file: None,
            },
            max_overhead_pct: Some(5.0),
            trap_costs: TrapCosts::ASSUMED,
            handoff: super::super::handoff::HandoffCaps {
                forced_known: true,
                offcpu: false,
            },
        };
        let mut to = Snapshot {
            at_ns: 1_000_000_000,
            probed_ns: 1_000_000_000,
            ..Snapshot::default()
        };
        to.threads.insert(
            7,
            ThreadSample {
                wait: Distribution::of_values(&[5_000_000; 100]),
                hold: Distribution::of_values(&[10_000; 100]),
            },
        );
        to.threads.insert(
            8,
            ThreadSample {
                wait: Distribution::of_values(&[0; 50]),
                hold: Distribution::of_values(&[9_000_000; 50]),
            },
        );
        let names = |tid: u32| match tid {
            7 => ("python3".to_owned(), Some(hostile.to_owned())),
            _ => ("python3".to_owned(), Some("cpu-hog".to_owned())),
        };
        build(
            &info,
            "final",
            EndReason::Duration,
            &Snapshot::default(),
            &to,
            &names,
        )
    }

    #[test]
    fn untrusted_names_are_escaped_and_nothing_is_fetched() {
        let hostile = r#"io-<script>alert("x")</script>&<img src=x onerror=alert(1)>"#;
        let page = render(Some(&report(hostile)), None);
        assert!(!page.contains("<script"), "a script tag got through");
        assert!(!page.contains("<img"), "an element got through");
        assert!(page.contains("io-&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;img"));
        // Self-contained: no URL to fetch anything from.
        for url in ["http:", "https:", " src=\"", " href=\"", "@import", "url("] {
            assert!(!page.contains(url), "{url} in the page");
        }
        // The numbers: 100 waits of 5 ms = 500 ms = 50% of the second.
        assert!(page.contains("500ms") && page.contains("50%"), "{page}");
        assert!(page.contains("Verdict: GIL contention"));
        assert!(page.contains(r#"id="timeline""#));
        assert_eq!(
            page.matches("<svg").count(),
            1 + 4,
            "share chart + wait and hold of 2 threads"
        );
    }
}
