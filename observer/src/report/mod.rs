//! Step 6: what a run found, as one model that both renderers (terminal, JSON) read.
pub mod bars;
pub mod blame;
pub mod blame_terminal;
pub mod canvas;
pub mod format;
pub mod handoff;
pub mod html;
pub mod json;
pub mod lock;
pub mod lock_terminal;
pub mod table;
pub mod terminal;

use serde::Serialize;

use self::format::round2;
pub use crate::ending::EndReason;
use crate::{
    collect::Snapshot,
    gil::plan::ChosenStrategy,
    histogram::{Distribution, Summary},
    probe::cost::{Hits, TrapCosts},
};

/// JSON schema version; bump on any incompatible change (docs/json.md).
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct InterpreterInfo {
    /// The interpreter object as the target sees it.
    pub path: String,
    pub version: String,
    /// How the GIL was found and probed (`symtab`: take_gil/drop_gil from the symbol table).
    pub strategy: ChosenStrategy,
    pub symbols: Vec<String>,
    /// `libc` strategy: how the GIL struct was found in memory.
    pub gil_location: Option<String>,
    /// A free-threaded build (3.13t+) whose GIL was switched on at run time.
    pub free_threaded: bool,
    /// Where the symbol table came from: `symtab` (the object's own), `minidebuginfo`
    /// (its `.gnu_debugdata`), `debug-file`; null for strategies without symbols.
    pub symbols_from: Option<&'static str>,
    /// With `debug-file`: the file, as found under the debug root.
    pub debug_file: Option<String>,
}

impl InterpreterInfo {
    /// What the report says about the interpreter and how its GIL is probed (a single run's
    /// report and each process of a fleet's alike).
    pub fn of(
        interpreter: &crate::gil::locate::Interpreter,
        plan: &crate::gil::plan::ProbePlan,
        gil_location: Option<String>,
    ) -> Self {
        InterpreterInfo {
            path: interpreter.file.path.clone(),
            version: interpreter.version.to_string(),
            strategy: plan.strategy,
            symbols: plan.symbols(),
            gil_location,
            free_threaded: interpreter.free_threaded,
            symbols_from: plan.symbols_from.as_ref().map(|s| s.label()),
            debug_file: plan
                .symbols_from
                .as_ref()
                .and_then(|s| s.debug_file())
                .map(|p| p.display().to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GilSummary {
    /// Share of wall time some thread held the GIL (≤ 100 for one interpreter).
    pub held_pct: f64,
    /// Summed waiting time of all threads as a share of wall time (300 = three threads waiting
    /// all the time).
    pub wait_pct: f64,
    pub acquisitions: u64,
    pub acquisitions_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadReport {
    pub tid: u32,
    /// The Python `threading.Thread` name when known, else the OS name.
    pub name: String,
    pub os_name: String,
    pub python_name: Option<String>,
    pub acquisitions: u64,
    pub wait_ns: Summary,
    pub hold_ns: Summary,
    /// [[exclusive upper bound in ns, count], …], non-empty buckets only.
    pub wait_hist: Vec<(u64, u64)>,
    pub hold_hist: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    /// `interval` (one per --interval, numbers for that interval only) or `final` (the whole run).
    pub kind: &'static str,
    pub pid: u32,
    /// The PID inside the target's own PID namespace, when it differs (containers).
    pub ns_pid: Option<u32>,
    pub command: Option<Vec<String>>,
    /// `gilwatch -- CMD`: the command's exit code (128+N when killed by signal N).
    pub exit_code: Option<i32>,
    pub interpreter: InterpreterInfo,
    pub duration_ns: u64,
    pub ended: EndReason,
    pub gil: GilSummary,
    pub threads: Vec<ThreadReport>,
    /// Probe events the kernel could not record (a map was full). 0 means the numbers are complete.
    pub lost_events: u64,
    pub sampling: Sampling,
    /// Kernel memory held by gilwatch's BPF maps at the end of the report's span (the sum of
    /// their `memlock`): it grows with the threads (and locks) observed.
    pub kernel_memory_bytes: u64,
    /// Which code held the GIL while others waited (final report only; null in interval
    /// reports and lock-only runs).
    pub blame: Option<blame::BlameReport>,
    /// Why the GIL changed hands, and GIL held off-CPU (report/handoff.rs).
    pub handoffs: handoff::HandoffReport,
    /// `--trace`: the timeline written (final report only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceSummary>,
    /// Final report of `-p PID` only: the process's GIL was idle while its Python children were
    /// busy (a pre-fork server's master): the sentence that says so and suggests `--children`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// What observing cost, and whether the overhead budget made it a sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sampling {
    /// Probes were off part of the time (duty cycling): counts and totals cover the probed
    /// windows only, and %wall figures are over the probed time.
    pub sampled: bool,
    /// Share of the wall time the probes were attached (1 when not sampled).
    pub coverage: f64,
    /// Probed wall time, ns.
    pub observed_ns: u64,
    /// `--max-overhead` (% of one CPU), null for `none`.
    pub max_overhead_pct: Option<f64>,
    /// Estimated cost of the probes to the target while attached, % of one CPU (probe traps
    /// per second × the measured cost per trap).
    pub probe_cost_pct: f64,
    /// The same averaged over the wall time: probe_cost_pct × coverage.
    pub overhead_pct: f64,
    /// The check of that estimate from the target's own CPU time: its system time beyond its
    /// unobserved share, % of one CPU over the wall time (probe/cpu_time.rs). Null when there
    /// was no unobserved baseline (`-- CMD`, a target that hardly ran) or the target exited.
    pub measured_overhead_pct: Option<f64>,
    /// Probe traps taken in the window, by kind.
    pub traps: Hits,
    /// What one trap of each kind costs on this machine (calibrated at start).
    pub trap_costs: TrapCosts,
}

/// Names for a thread: (os_name, python_name).
pub type Names<'a> = &'a dyn Fn(u32) -> (String, Option<String>);

/// Everything about a run that is not measured data.
pub struct RunInfo<'a> {
    pub pid: u32,
    pub ns_pid: Option<u32>,
    pub command: Option<&'a [String]>,
    pub exit_code: Option<i32>,
    pub interpreter: InterpreterInfo,
    pub max_overhead_pct: Option<f64>,
    /// What a trap of each kind costs on this machine (calibrated at start).
    pub trap_costs: TrapCosts,
    /// What the handoff section can see.
    pub handoff: handoff::HandoffCaps,
}

/// Builds a report from two snapshots (`from` may be the empty snapshot taken at attach).
pub fn build(
    info: &RunInfo<'_>,
    kind: &'static str,
    ended: EndReason,
    from: &Snapshot,
    to: &Snapshot,
    names: Names<'_>,
) -> Report {
    let duration_ns = to.at_ns.saturating_sub(from.at_ns).max(1);
    let sampling = sampling(info, from, to, duration_ns);
    // Shares of time are over the time we looked: unprobed windows are unknown, not idle.
    let base_ns = sampling.observed_ns.max(1);
    let empty = Distribution::default();
    let mut threads: Vec<ThreadReport> = to
        .threads
        .iter()
        .map(|(&tid, now)| {
            let before = from.threads.get(&tid);
            let wait = now.wait.since(before.map_or(&empty, |b| &b.wait));
            let hold = now.hold.since(before.map_or(&empty, |b| &b.hold));
            let (os_name, python_name) = names(tid);
            ThreadReport {
                tid,
                name: python_name.clone().unwrap_or_else(|| os_name.clone()),
                os_name,
                python_name,
                acquisitions: wait.count,
                wait_ns: wait.summary(),
                hold_ns: hold.summary(),
                wait_hist: wait.nonzero_buckets(),
                hold_hist: hold.nonzero_buckets(),
            }
        })
        .filter(|t| t.acquisitions > 0 || t.hold_ns.total > 0 || t.wait_ns.total > 0)
        .collect();
    // Most waiting first: the threads that suffer from the GIL are what the reader came for.
    threads.sort_by(|a, b| {
        b.wait_ns
            .total
            .cmp(&a.wait_ns.total)
            .then(b.hold_ns.total.cmp(&a.hold_ns.total))
    });
    let held: u64 = threads.iter().map(|t| t.hold_ns.total).sum();
    let waited: u64 = threads.iter().map(|t| t.wait_ns.total).sum();
    let acquisitions: u64 = threads.iter().map(|t| t.acquisitions).sum();
    let secs = base_ns as f64 / 1e9;
    Report {
        schema: SCHEMA,
        kind,
        pid: info.pid,
        ns_pid: info.ns_pid.filter(|&p| p != info.pid),
        command: info.command.map(<[String]>::to_vec),
        exit_code: info.exit_code,
        interpreter: info.interpreter.clone(),
        duration_ns,
        ended,
        gil: GilSummary {
            held_pct: round2(held as f64 * 100.0 / base_ns as f64),
            wait_pct: round2(waited as f64 * 100.0 / base_ns as f64),
            acquisitions,
            acquisitions_per_sec: round2(acquisitions as f64 / secs),
        },
        threads,
        lost_events: to.lost_events.saturating_sub(from.lost_events),
        sampling,
        kernel_memory_bytes: to.kernel_memory_bytes,
        blame: None,
        handoffs: handoff::build(info.handoff, &from.handoffs, &to.handoffs, names),
        trace: None,
        hint: None,
    }
}

fn sampling(info: &RunInfo<'_>, from: &Snapshot, to: &Snapshot, duration_ns: u64) -> Sampling {
    let observed_ns = to.probed_ns.saturating_sub(from.probed_ns).min(duration_ns);
    let probed_s = observed_ns.max(1) as f64 / 1e9;
    let probe_cost_pct = info
        .trap_costs
        .cost_pct(&to.hits.since(&from.hits), probed_s);
    let coverage = observed_ns as f64 / duration_ns as f64;
    Sampling {
        sampled: to.sampled,
        coverage: (coverage * 1000.0).round() / 1000.0,
        observed_ns,
        max_overhead_pct: info.max_overhead_pct,
        probe_cost_pct: round2(probe_cost_pct),
        overhead_pct: round2(probe_cost_pct * coverage),
        measured_overhead_pct: None,
        traps: to.hits.since(&from.hits),
        trap_costs: info.trap_costs,
    }
}
