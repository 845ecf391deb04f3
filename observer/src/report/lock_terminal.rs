//! The human lock report: per lock a summary line, a per-thread table, hold and wait histograms
//! and (discovery) the call sites that waited most.
use std::fmt::Write as _;

use super::{
    EndReason,
    bars::bars,
    canvas::{Canvas, styles},
    format::{fmt_ns, memory_line, pct},
    lock::{LockEntry, LockReport},
    table::{self, Layout, Row},
};

/// Locks shown in full in discovery; the rest get one line each.
const DISCOVER_FULL: usize = 5;

/// Python locks shown in full (`--py-locks`), most waiting first.
const PYTHON_FULL: usize = 5;

pub fn final_report(r: &LockReport, canvas: &Canvas) -> String {
    let mut out = final_body(r, canvas);
    let _ = writeln!(out, "\n{}", memory_line(r.kernel_memory_bytes));
    canvas.fit(out)
}

fn final_body(r: &LockReport, canvas: &Canvas) -> String {
    let mut out = String::new();
    let ended = match r.ended {
        EndReason::Running | EndReason::Duration => "duration reached",
        EndReason::Interrupted => "interrupted (Ctrl-C)",
        EndReason::Quit => "quit",
        EndReason::Terminated => "terminated (SIGTERM)",
        EndReason::TargetExited => "target exited",
    };
    let what = if r.mode == "discover" {
        "contended pthread mutexes (--mutexes)"
    } else {
        "locks"
    };
    let title = format!("gilwatch · PID {} · {what}", r.pid);
    let _ = writeln!(out, "{}", canvas.paint(&title, styles::TITLE));
    let _ = writeln!(out, "probes: {}", short_probes(&r.probes));
    let _ = writeln!(out, "observed {} · ended: {ended}", fmt_ns(r.duration_ns));
    if let Some(o) = &r.overhead {
        let measured = o
            .measured_pct
            .map_or("not measured (no unobserved baseline)".to_owned(), |m| {
                format!("measured {m:.2}%")
            });
        let _ = writeln!(
            out,
            "overhead: estimate {:.2}% of a CPU, {measured} · trap cost {:.2} µs emulated, {:.2} µs single-stepped ({})",
            o.estimate_pct,
            o.trap_costs.emulated_ns / 1e3,
            o.trap_costs.stepped_ns / 1e3,
            o.trap_costs.source
        );
    }
    if r.lost_events > 0 {
        let _ = writeln!(
            out,
            "{}: {} lock events were lost (kernel map full): numbers are incomplete",
            canvas.paint("WARNING", styles::BAD),
            r.lost_events
        );
    }
    if r.locks.is_empty() {
        let _ = writeln!(
            out,
            "\nNo contended pthread mutex: no thread had to wait for a mutex while gilwatch watched."
        );
        return out;
    }
    if r.mode == "discover" {
        // The MUTEX column gives way on a narrow terminal (the other columns take 50).
        let w = canvas
            .width
            .map_or(40, |cols| cols.saturating_sub(51).clamp(16, 40));
        let _ = writeln!(
            out,
            "\n  RANK  {:<w$} {:>8} {:>8} {:>9} {:>6} {:>6}",
            "MUTEX", "ACQ", "CONTENDED", "WAIT", "%wall", "HELD"
        );
        for (i, l) in r.locks.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:>4}  {:<w$} {:>8} {:>8} {:>9} {:>6} {:>6}",
                i + 1,
                match canvas.width {
                    Some(_) => super::format::truncate(&label(l), w),
                    None => label(l),
                },
                l.counts.acquisitions,
                l.counts.contended,
                fmt_ns(l.times.wait_ns.total),
                pct(l.wait_pct),
                pct(l.held_pct)
            );
        }
    }
    let full = if r.mode == "discover" {
        DISCOVER_FULL
    } else {
        usize::MAX
    };
    // A Python program has many short-lived locks (each thread's start and join, each
    // Condition.wait's waiter lock): the terminal shows those that waited most.
    let mut python_shown = 0;
    let mut python_more = 0;
    for l in r.locks.iter().take(full) {
        if l.kind == "python" {
            if python_shown == PYTHON_FULL {
                python_more += 1;
                continue;
            }
            python_shown += 1;
        }
        out.push('\n');
        out.push_str(&lock_block(l, r.duration_ns, canvas));
    }
    if python_more > 0 {
        let _ = writeln!(
            out,
            "\n{python_more} more Python locks, with less waiting (all of them are in the JSON: --json)"
        );
    }
    if r.call_site_stacks_lost > 0 {
        let _ = writeln!(
            out,
            "\n{} call sites have no stack beyond their caller (the call-stack map was full)",
            r.call_site_stacks_lost
        );
    }
    out
}

/// `libc.so.6:pthread_mutex_lock, …` → `pthread_mutex_lock, … (libc.so.6)` when one object.
fn short_probes(probes: &[String]) -> String {
    let objects: Vec<&str> = probes
        .iter()
        .filter_map(|p| p.split_once(':').map(|x| x.0))
        .collect();
    match objects.first() {
        Some(first) if objects.iter().all(|o| o == first) => {
            let names: Vec<&str> = probes
                .iter()
                .filter_map(|p| p.split_once(':').map(|x| x.1))
                .collect();
            format!("{} in {first}", names.join(", "))
        }
        _ => probes.join(", "),
    }
}

/// How a lock is named in the reports.
pub fn label(l: &LockEntry) -> String {
    match (&l.symbol, &l.spec) {
        (Some(s), Some(spec)) if l.kind == "custom" => format!("{spec} on {s} @ {}", l.addr),
        (Some(s), _) => format!("{s} @ {}", l.addr),
        (None, Some(spec)) if l.kind == "custom" => format!("{spec} instance {}", l.addr),
        _ => l.addr.clone(),
    }
}

fn lock_block(l: &LockEntry, duration_ns: u64, canvas: &Canvas) -> String {
    let mut out = summary_line(l);
    let extra = extras(l);
    if !extra.is_empty() {
        let _ = writeln!(out, "  {}", extra.join(" · "));
    }
    if l.threads.is_empty() {
        let _ = writeln!(
            out,
            "  no thread took or released it while gilwatch watched"
        );
        return out;
    }
    let rows: Vec<Row<'_>> = l.threads.iter().map(Row::from).collect();
    let layout = Layout {
        name_width: 20,
        contended: true,
        limit: 40,
        canvas: *canvas,
    };
    out.push_str(&table::threads(&rows, duration_ns, &layout));
    out.push_str(&histograms(l));
    out.push_str(&call_sites(l));
    out
}

/// `mutex NAME · held … · threads waited … · N acquisitions, M contended (P%)`
fn summary_line(l: &LockEntry) -> String {
    let c = &l.counts;
    let contended_pct = if c.acquisitions > 0 {
        format!(
            " ({:.0}%)",
            c.contended as f64 * 100.0 / c.acquisitions as f64
        )
    } else {
        String::new()
    };
    format!(
        "{} {} · held {} of wall time · threads waited {} (summed) · {} acquisitions, {} contended{contended_pct}\n",
        match l.kind {
            "custom" => "custom lock",
            "python" => "python lock",
            _ => "mutex",
        },
        label(l),
        pct(l.held_pct),
        pct(l.wait_pct),
        c.acquisitions,
        c.contended
    )
}

/// The rarer counts, each only when it happened.
fn extras(l: &LockEntry) -> Vec<String> {
    let c = &l.counts;
    let mut extra = Vec::new();
    if c.trylock_busy > 0 {
        extra.push(format!("{} trylock busy", c.trylock_busy));
    }
    if c.failed > 0 {
        extra.push(format!(
            "{} failed (timed out or error) after {} total",
            c.failed,
            fmt_ns(l.times.failed_wait_ns.total)
        ));
    }
    if c.recursive > 0 {
        extra.push(format!("{} recursive re-locks", c.recursive));
    }
    if l.times.cond_wait_ns.count > 0 {
        extra.push(format!(
            "condition waits n={} total {} p50 {} max {} (neither hold nor wait)",
            l.times.cond_wait_ns.count,
            fmt_ns(l.times.cond_wait_ns.total),
            fmt_ns(l.times.cond_wait_ns.p50),
            fmt_ns(l.times.cond_wait_ns.max)
        ));
    }
    extra
}

/// Hold and wait times over all threads, with their histograms.
fn histograms(l: &LockEntry) -> String {
    let mut out = String::new();
    for (title, s, hist) in [
        ("hold", &l.times.hold_ns, &l.times.hold_hist),
        ("wait", &l.times.wait_ns, &l.times.wait_hist),
    ] {
        if s.count == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "  {title} · all threads · n={} p50 {} p90 {} p99 {} max {}",
            s.count,
            fmt_ns(s.p50),
            fmt_ns(s.p90),
            fmt_ns(s.p99),
            fmt_ns(s.max)
        );
        out.push_str(&bars(hist, 30));
    }
    out
}

/// Discovery's call sites, most waiting first.
fn call_sites(l: &LockEntry) -> String {
    let mut out = String::new();
    if l.call_sites.is_empty() {
        return out;
    }
    let _ = writeln!(out, "  call sites (most waiting first):");
    for s in &l.call_sites {
        let _ = writeln!(
            out,
            "    wait {:>7} · {:>6} acq · {:>6} contended · {}",
            fmt_ns(s.wait_ns),
            s.acquisitions,
            s.contended,
            if s.frames.is_empty() {
                "(call site unknown)".to_owned()
            } else {
                s.frames.join(" ← ")
            }
        );
    }
    out
}
