//! The report of a run over several processes: one GIL report per process (the single-process
//! report's shape), a merged summary per role, and who was left out. Rendered for the terminal
//! here; JSON is the serialized struct (docs/json.md, `"kind": "fleet"`).
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::report::{
    EndReason, Report, SCHEMA,
    canvas::Canvas,
    format::{fmt_ns, pct, round2},
    terminal,
};

/// What a process is in its tree of observed processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Has observed descendants (a pre-fork server's master, a pool's parent).
    Master,
    /// A descendant running the same executable as its observed parent (a pre-fork worker).
    Worker,
    /// A descendant running another executable.
    Child,
    /// Neither: observed on its own.
    Process,
}

impl Role {
    fn singular(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
            Role::Child => "child",
            Role::Process => "process",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "workers",
            Role::Child => "children",
            Role::Process => "processes",
        }
    }
}

/// One observed process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessEntry {
    pub role: Role,
    /// Its command name (comm): what roles are grouped by, besides the role.
    pub comm: String,
    /// The nearest observed ancestor, if any.
    pub parent: Option<u32>,
    /// The process exited during the run: its report ends there.
    pub exited: bool,
    /// ns into the run when observing it began (0 for processes there at start).
    pub joined_after_ns: u64,
    /// For a process that started during the run: from its start (fork) to its probes being in,
    /// ns (the scan's period plus planning for it).
    pub picked_up_after_ns: Option<u64>,
    /// The process's GIL report, as a single-process run writes it.
    pub report: Report,
}

/// The processes of one role (and command name), merged.
#[derive(Debug, Clone, Serialize)]
pub struct RoleSummary {
    pub role: Role,
    pub comm: String,
    pub pids: Vec<u32>,
    pub exited: usize,
    pub threads: usize,
    /// Sum over the processes: equal to the sum of their reports' `gil.acquisitions`.
    pub acquisitions: u64,
    pub acquisitions_per_sec: f64,
    /// Mean over the processes of each one's GIL held share (each has its own GIL).
    pub held_pct_mean: f64,
    pub held_pct_max: f64,
    /// Summed waiting of all their threads over the run's wall time.
    pub wait_pct: f64,
    /// The longest single wait of any of their threads.
    pub max_wait_ns: u64,
}

/// A selected process that is not observed.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub pid: u32,
    pub comm: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub schema: u32,
    /// Always `fleet`.
    pub kind: &'static str,
    /// How the processes were selected, as given (`-p 10 --children`).
    pub selection: String,
    pub duration_ns: u64,
    pub ended: EndReason,
    pub roles: Vec<RoleSummary>,
    pub processes: Vec<ProcessEntry>,
    /// Processes named by `-p` (or `--name`) that do not run a CPython gilwatch can probe.
    pub skipped: Vec<Skipped>,
    /// Descendants (`--children`) or processes (`--all`) that do not run CPython, ignored.
    pub ignored_non_python: usize,
    /// Estimated cost of all probes in all processes, % of one CPU, while attached.
    pub probe_cost_pct: f64,
    pub sampled: bool,
    pub lost_events: u64,
    pub kernel_memory_bytes: u64,
}

/// Merges the processes by (role, comm), in role order.
pub fn roles(processes: &[ProcessEntry], duration_ns: u64) -> Vec<RoleSummary> {
    let mut groups: BTreeMap<(Role, String), Vec<&ProcessEntry>> = BTreeMap::new();
    for p in processes {
        groups.entry((p.role, p.comm.clone())).or_default().push(p);
    }
    let secs = duration_ns.max(1) as f64 / 1e9;
    groups
        .into_iter()
        .map(|((role, comm), ps)| {
            let held: Vec<f64> = ps.iter().map(|p| p.report.gil.held_pct).collect();
            let waited: u64 = ps
                .iter()
                .flat_map(|p| &p.report.threads)
                .map(|t| t.wait_ns.total)
                .sum();
            let acquisitions = ps.iter().map(|p| p.report.gil.acquisitions).sum();
            RoleSummary {
                role,
                comm,
                pids: ps.iter().map(|p| p.report.pid).collect(),
                exited: ps.iter().filter(|p| p.exited).count(),
                threads: ps.iter().map(|p| p.report.threads.len()).sum(),
                acquisitions,
                acquisitions_per_sec: round2(acquisitions as f64 / secs),
                held_pct_mean: round2(held.iter().sum::<f64>() / held.len().max(1) as f64),
                held_pct_max: held.iter().copied().fold(0.0, f64::max),
                wait_pct: round2(waited as f64 * 100.0 / duration_ns.max(1) as f64),
                max_wait_ns: ps
                    .iter()
                    .flat_map(|p| &p.report.threads)
                    .map(|t| t.wait_ns.max)
                    .max()
                    .unwrap_or(0),
            }
        })
        .collect()
}

impl FleetReport {
    pub fn new(
        selection: String,
        duration_ns: u64,
        ended: EndReason,
        mut processes: Vec<ProcessEntry>,
    ) -> FleetReport {
        processes.sort_by_key(|p| (p.role, p.comm.clone(), p.report.pid));
        FleetReport {
            schema: SCHEMA,
            kind: "fleet",
            selection,
            duration_ns,
            ended,
            roles: roles(&processes, duration_ns),
            processes,
            skipped: Vec::new(),
            ignored_non_python: 0,
            probe_cost_pct: 0.0,
            sampled: false,
            lost_events: 0,
            kernel_memory_bytes: 0,
        }
    }
}

/// The human report: the summary per role first (what a fleet's operator reads), then a
/// section per process (verdict and per-thread table).
pub fn render(r: &FleetReport, canvas: &Canvas) -> String {
    let mut out = summary(r);
    for p in &r.processes {
        section(&mut out, p, canvas);
    }
    let _ = writeln!(
        out,
        "\n{}",
        crate::report::format::memory_line(r.kernel_memory_bytes)
    );
    out
}

/// The header and the table per role: the final report's top, and the live view while the run
/// lasts (numbers since the start).
pub fn summary(r: &FleetReport) -> String {
    let mut out = String::new();
    let exited = r.processes.iter().filter(|p| p.exited).count();
    let _ = writeln!(
        out,
        "gilwatch · {} CPython process(es) ({}) · observed {}{}{}",
        r.processes.len(),
        r.selection,
        fmt_ns(r.duration_ns),
        if r.ended == EndReason::Running {
            " so far (numbers since the start)".to_owned()
        } else {
            format!(" · ended: {}", ended_text(r.ended))
        },
        if exited > 0 {
            format!(" · {exited} exited during the run")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "probe cost ≈{} of a CPU for all of them{}",
        pct(r.probe_cost_pct),
        if r.sampled {
            " · SAMPLED: probes attached in windows only (budget)"
        } else {
            " · every GIL cycle observed"
        }
    );
    for s in &r.skipped {
        let _ = writeln!(out, "not observed: PID {} ({}): {}", s.pid, s.comm, s.why);
    }
    if r.ignored_non_python > 0 {
        let _ = writeln!(
            out,
            "ignored: {} selected process(es) that do not run CPython",
            r.ignored_non_python
        );
    }
    if r.lost_events > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} GIL events lost (a kernel map was full)",
            r.lost_events
        );
    }
    let _ = writeln!(
        out,
        "\n{:<9} {:<16} {:>5} {:>7} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "ROLE",
        "COMMAND",
        "PROCS",
        "THREADS",
        "ACQ/s",
        "HELD avg",
        "HELD max",
        "WAIT sum",
        "WAIT max"
    );
    for s in &r.roles {
        let procs = if s.exited > 0 {
            format!("{}({}x)", s.pids.len(), s.exited)
        } else {
            s.pids.len().to_string()
        };
        let _ = writeln!(
            out,
            "{:<9} {:<16} {:>5} {:>7} {:>9.0} {:>8} {:>9} {:>9} {:>9}",
            s.role.label(),
            truncate(&s.comm, 16),
            procs,
            s.threads,
            s.acquisitions_per_sec,
            pct(s.held_pct_mean),
            pct(s.held_pct_max),
            pct(s.wait_pct),
            fmt_ns(s.max_wait_ns)
        );
    }
    let total: u64 = r.roles.iter().map(|s| s.acquisitions).sum();
    let _ = writeln!(
        out,
        "{} acquisitions in all ({} processes; (Nx): N of them exited)",
        total,
        r.processes.len()
    );
    out
}

/// One process's section: its summary line, verdict and per-thread table.
fn section(out: &mut String, p: &ProcessEntry, canvas: &Canvas) {
    {
        let rep = &p.report;
        let state = if p.exited {
            format!(
                " · exited after {}",
                fmt_ns(p.joined_after_ns + rep.duration_ns)
            )
        } else if p.joined_after_ns > 0 {
            format!(" · joined after {}", fmt_ns(p.joined_after_ns))
        } else {
            String::new()
        };
        let parent = p.parent.map(|pp| format!(" of {pp}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "\n── PID {} · {}{parent} · {} · CPython {} · strategy {}{state}",
            rep.pid,
            p.role.singular(),
            p.comm,
            rep.interpreter.version,
            rep.interpreter.strategy
        );
        let _ = writeln!(out, "{}", terminal::summary_line(rep));
        let _ = writeln!(out, "{}", terminal::verdict(rep, canvas));
        out.push_str(&terminal::table(rep, 10, canvas));
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn ended_text(e: EndReason) -> &'static str {
    match e {
        EndReason::Running => "running",
        EndReason::Duration => "duration reached",
        EndReason::Interrupted => "interrupted (Ctrl-C)",
        EndReason::Terminated => "terminated (SIGTERM)",
        EndReason::TargetExited => "every process exited",
        EndReason::Quit => "quit",
    }
}
