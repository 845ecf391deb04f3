//! The human report: a header, the GIL summary, a per-thread table (most waiting first) and
//! histograms of the threads that waited most.
use std::fmt::Write as _;

use super::{
    EndReason, Report, ThreadReport,
    bars::bars,
    canvas::{Canvas, styles},
    format::{fmt_ns, pct},
    table::{self, Layout, Row, SUFFERING_PCT},
};

pub fn header(r: &Report, canvas: &Canvas) -> String {
    let mut out = String::new();
    let pid = match r.ns_pid {
        Some(ns) => format!("PID {} (PID {ns} in its namespace)", r.pid),
        None => format!("PID {}", r.pid),
    };
    let title = format!(
        "gilwatch · {pid} · CPython {} · {}",
        r.interpreter.version, r.interpreter.path
    );
    let _ = writeln!(out, "{}", canvas.paint(&title, styles::TITLE));
    let ft = if r.interpreter.free_threaded {
        " · free-threaded build, GIL on"
    } else {
        ""
    };
    // The object's own .symtab is the usual case; other sources are worth a word.
    let from = match (r.interpreter.symbols_from, &r.interpreter.debug_file) {
        (Some("minidebuginfo"), _) => " · symbols from MiniDebugInfo (.gnu_debugdata)".to_owned(),
        (Some("debug-file"), Some(f)) => format!(" · symbols from {f}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "probes: {} · strategy: {}{from}{ft}",
        r.interpreter.symbols.join(", "),
        r.interpreter.strategy
    );
    out
}

pub fn summary_line(r: &Report) -> String {
    format!(
        "GIL held {} of wall time · threads waited {} of wall time (summed over threads) · {:.0} acquisitions/s",
        pct(r.gil.held_pct),
        pct(r.gil.wait_pct),
        r.gil.acquisitions_per_sec
    )
}

/// The per-thread table; at most `limit` rows.
pub fn table(r: &Report, limit: usize, canvas: &Canvas) -> String {
    let rows: Vec<Row<'_>> = r.threads.iter().map(Row::from).collect();
    let layout = Layout {
        name_width: 24,
        contended: false,
        limit,
        canvas: *canvas,
    };
    table::threads(&rows, r.sampling.observed_ns, &layout)
}

fn histogram_block(
    title: &str,
    t: &ThreadReport,
    s: &crate::histogram::Summary,
    hist: &[(u64, u64)],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {title} · {} (tid {}) · n={} p50 {} p99 {} max {}",
        t.name,
        t.tid,
        s.count,
        fmt_ns(s.p50),
        fmt_ns(s.p99),
        fmt_ns(s.max)
    );
    out.push_str(&bars(hist, 30));
    out
}

/// The answer in one or two lines: is it the GIL, and who holds it while others wait.
pub fn verdict(r: &Report, canvas: &Canvas) -> String {
    let dur = r.sampling.observed_ns.max(1) as f64;
    let share = |ns: u64| ns as f64 * 100.0 / dur;
    let suffering: Vec<&ThreadReport> = r
        .threads
        .iter()
        .filter(|t| share(t.wait_ns.total) >= SUFFERING_PCT)
        .collect();
    if suffering.is_empty() {
        return format!(
            "{} no thread waited {SUFFERING_PCT:.0}% of the time or more for it.",
            canvas.paint("Verdict: the GIL is not a bottleneck here:", styles::GOOD)
        );
    }
    let names: Vec<String> = suffering
        .iter()
        .take(4)
        .map(|t| format!("{} {}", t.name, pct(share(t.wait_ns.total))))
        .collect();
    let more = if suffering.len() > 4 {
        format!(" and {} more", suffering.len() - 4)
    } else {
        String::new()
    };
    let mut text = format!(
        "{} {} thread(s) spent {SUFFERING_PCT:.0}%+ of their time waiting for it ({}{more}).",
        canvas.paint("Verdict: GIL contention.", styles::BAD),
        suffering.len(),
        names.join(", ")
    );
    if let Some(top) = r.threads.iter().max_by_key(|t| t.hold_ns.total) {
        let _ = write!(
            text,
            "\n         Top holder: {} (tid {}) held it {} of the time, typically {} per hold.",
            top.name,
            top.tid,
            pct(share(top.hold_ns.total)),
            fmt_ns(top.hold_ns.p50)
        );
    }
    if let Some(line) = r.blame.as_ref().and_then(super::blame_terminal::top_code) {
        let _ = write!(text, "\n         {line}");
    }
    text
}

/// What observing cost, and whether the budget made the run a sample.
pub fn cost_line(r: &Report, canvas: &Canvas) -> String {
    let s = &r.sampling;
    let budget = s
        .max_overhead_pct
        .map_or("no budget".to_owned(), |m| format!("budget {m}%"));
    let costs = format!(
        "trap cost {} µs emulated, {} µs single-stepped ({})",
        fmt_us(s.trap_costs.emulated_ns),
        fmt_us(s.trap_costs.stepped_ns),
        s.trap_costs.source
    );
    let check = match s.measured_overhead_pct {
        Some(m) => format!(
            "overhead: estimate {}% of a CPU, measured {m}% (target's system time beyond its own) · {costs}",
            s.overhead_pct
        ),
        None => format!(
            "overhead: estimate {}% of a CPU, not measured (no unobserved baseline) · {costs}",
            s.overhead_pct
        ),
    };
    let line = if s.sampled {
        format!(
            "{}: probes attached {:.1}% of the time (they cost ≈{}% of a CPU while attached, over the {budget}): \
             counts and totals are of the probed windows only, %wall is over the probed time",
            canvas.paint("SAMPLED", styles::WARN),
            s.coverage * 100.0,
            s.probe_cost_pct
        )
    } else {
        format!(
            "probe cost ≈{}% of a CPU ({budget}) · every GIL cycle observed",
            s.probe_cost_pct
        )
    };
    format!("{line}\n{check}")
}

fn fmt_us(ns: f64) -> String {
    format!("{:.2}", ns / 1e3)
}

/// One interval's line block for the live view.
pub fn live(r: &Report, elapsed_ns: u64, canvas: &Canvas) -> String {
    let mut out = String::new();
    let sampled = if r.sampling.sampled {
        format!(" · sampled, {:.0}% observed", r.sampling.coverage * 100.0)
    } else {
        String::new()
    };
    let clock = format!("── {:>6.1}s ──", elapsed_ns as f64 / 1e9);
    let _ = writeln!(
        out,
        "{} {}{sampled}",
        canvas.paint(&clock, styles::DIM),
        summary_line(r)
    );
    out.push_str(&table(r, 10, canvas));
    canvas.fit(out)
}

pub fn final_report(r: &Report, canvas: &Canvas) -> String {
    let mut out = final_body(r, canvas);
    let _ = writeln!(
        out,
        "\n{}",
        super::format::memory_line(r.kernel_memory_bytes)
    );
    canvas.fit(out)
}

/// Why the run ended, in words.
pub fn ended(r: &Report) -> String {
    match r.ended {
        EndReason::Running | EndReason::Duration => "duration reached".to_owned(),
        EndReason::Interrupted => "interrupted (Ctrl-C)".to_owned(),
        EndReason::Quit => "quit (gilwatch top)".to_owned(),
        EndReason::Terminated => "terminated (SIGTERM)".to_owned(),
        EndReason::TargetExited => match r.exit_code {
            Some(c) => format!("target exited with code {c}"),
            None => "target exited".to_owned(),
        },
    }
}

fn final_body(r: &Report, canvas: &Canvas) -> String {
    let mut out = header(r, canvas);
    let _ = writeln!(
        out,
        "observed {} · ended: {}",
        fmt_ns(r.duration_ns),
        ended(r)
    );
    let _ = writeln!(out, "{}", cost_line(r, canvas));
    if r.lost_events > 0 {
        let _ = writeln!(
            out,
            "{}: {} probe events were lost (kernel map full): numbers are incomplete",
            canvas.paint("WARNING", styles::BAD),
            r.lost_events
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", summary_line(r));
    if r.threads.is_empty() {
        let _ = writeln!(
            out,
            "\nNo GIL activity seen: no thread took or released the GIL while gilwatch watched."
        );
        if r.interpreter.version.starts_with("3.6.") {
            let _ = writeln!(
                out,
                "(CPython 3.6 creates the GIL only when a second thread starts: a single-threaded 3.6 program has none.)"
            );
        }
        return out;
    }
    let _ = writeln!(out, "{}", verdict(r, canvas));
    let _ = writeln!(out);
    out.push_str(&table(r, 40, canvas));
    let waiting: Vec<&ThreadReport> = r
        .threads
        .iter()
        .filter(|t| t.wait_ns.count > 0)
        .take(3)
        .collect();
    if !waiting.is_empty() {
        let _ = writeln!(out);
        for t in waiting {
            out.push_str(&histogram_block("GIL wait", t, &t.wait_ns, &t.wait_hist));
        }
    }
    if let Some(t) = r
        .threads
        .iter()
        .filter(|t| t.hold_ns.count > 0)
        .max_by_key(|t| t.hold_ns.total)
    {
        out.push_str(&histogram_block("GIL hold", t, &t.hold_ns, &t.hold_hist));
    }
    if let Some(b) = &r.blame {
        out.push_str(&super::blame_terminal::section(b));
    }
    let handoffs = super::handoff::render(&r.handoffs);
    if !handoffs.is_empty() {
        let _ = writeln!(out);
        out.push_str(&handoffs);
    }
    out
}
