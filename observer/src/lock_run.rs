//! The lock path wired to its report: what the kernel collected becomes a `LockReport`, which is
//! written where the GIL report went; and the run of a process without a GIL (locks only).
use std::{
    collections::HashMap, fs::OpenOptions, io::Write, path::Path, process::ExitCode, time::Duration,
};

use anyhow::Context as _;
use aya::Ebpf;

use crate::{
    ending::EndReason,
    error::{Exit, user},
    lock::{LockWatch, attach, collect, plan, prepare, session, spec::LockRequest, symbolize},
    probe::{
        attach as probe_attach,
        cost::Overhead,
        cpu_time::{Baseline, CpuTime},
    },
    report::{
        canvas::{Canvas, ColorWhen},
        json,
        lock::{self as lock_report, LockContext, LockReport},
        lock_terminal,
    },
    target::process::Process,
};

/// Frames shown per call site.
const CALL_SITE_DEPTH: usize = 4;

/// The final report: reads the maps, names threads, symbolizes call sites. `names`: the best
/// names known (Python names from the GIL report, OS names); threads missing there get the name
/// the kernel saw.
pub fn report(
    watch: &LockWatch,
    ebpf: &mut Ebpf,
    ended: EndReason,
    names: &HashMap<u32, String>,
) -> anyhow::Result<LockReport> {
    // The run is over: stop recording, so the maps read below agree with each other (a lock
    // released between reading the counts and the call sites would be in one, not the other).
    attach::disarm(ebpf)?;
    std::thread::sleep(std::time::Duration::from_millis(2));
    let ebpf = &*ebpf;
    let snap = collect::snapshot(ebpf)?;
    let thread_name = |tid: u32| names.get(&tid).cloned();
    let describe = |addr: u64| watch.space.describe(addr);
    let call_site = |caller: u64, id: i64| {
        let stack = collect::stack(ebpf, id);
        symbolize::call_site(watch.pid, &watch.space, caller, &stack, CALL_SITE_DEPTH)
    };
    let ctx = LockContext {
        pid: watch.pid,
        discover: watch.discover,
        probes: plan::symbols(&watch.probes),
        named: &watch.named,
        custom_labels: &watch.custom_labels,
        thread_name: &thread_name,
        describe: &describe,
        call_site: &call_site,
    };
    Ok(lock_report::build(&ctx, ended, &watch.start, &snap))
}

/// Writes the lock report where the GIL report went: the human one to stdout (stderr with
/// `--json -`), the JSON line to stdout or appended to the `--json` file (`json`).
/// `color`: `--color`, for a terminal.
pub fn write(json: Option<&Path>, report: &LockReport, color: ColorWhen) -> anyhow::Result<()> {
    if json.is_some_and(|p| p.as_os_str() == "-") {
        let err = std::io::stderr();
        eprint!(
            "{}",
            lock_terminal::final_report(report, &Canvas::of(&err, color))
        );
    } else {
        let out = std::io::stdout();
        print!(
            "{}",
            lock_terminal::final_report(report, &Canvas::of(&out, color))
        );
        std::io::stdout().flush().ok();
    }
    match json {
        None => Ok(()),
        Some(p) if p.as_os_str() == "-" => json::write_line(&mut std::io::stdout(), report),
        Some(p) => {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    user(
                        Exit::Usage,
                        format!("cannot write --json {}: {e}", p.display()),
                    )
                })?;
            json::write_line(&mut f, report)
        }
    }
}

/// A process without a GIL (C, C++, Rust…): locks only, for `duration` (else until it exits
/// or gilwatch is stopped), the report written as [`write`] does.
pub fn run_without_gil(
    request: &LockRequest,
    process: Process,
    duration: Option<Duration>,
    json: Option<&Path>,
    html: Option<crate::report::html::HtmlFile>,
    color: ColorWhen,
) -> anyhow::Result<ExitCode> {
    let cpu_at_start = CpuTime::read(process.pid).ok();
    let mut watch = prepare(&process, request)?;
    crate::probe::site::apply(&mut [], watch.probes_mut());
    let needs = probe_attach::MapNeeds {
        gil: false,
        locks: true,
        call_sites: request.discover,
        blame: false,
        trace_bytes: None,
    };
    // The BPF object with no GIL probe: its maps and the mutex programs.
    let mut attached = probe_attach::load(process.pid, needs)?;
    watch
        .attach(&mut attached)
        .and_then(|()| attached.count_lock_sites(watch.probes()))
        .map_err(|e| {
            if !process.is_alive() {
                user(
                    Exit::NoSuchProcess,
                    format!("PID {} exited while gilwatch was attaching", process.pid),
                )
            } else {
                e
            }
        })?;
    watch.announce();
    let baseline = cpu_at_start
        .zip(attached.cpu_before_attach)
        .and_then(|(a, b)| Baseline::between(&a, &b));
    let (hits_start, cpu_start) = (attached.hits()?, CpuTime::read(process.pid).ok());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let mut names = HashMap::new();
    let ended = runtime.block_on(session::wait(&process, duration, &mut names))?;
    let mut report = report(&watch, &mut attached.ebpf, ended, &names)?;
    let cpu_end = CpuTime::read(process.pid).ok();
    let traps = attached.hits()?.since(&hits_start);
    let secs = report.duration_ns as f64 / 1e9;
    let round = |p: f64| (p * 100.0).round() / 100.0;
    report.overhead = Some(Overhead {
        estimate_pct: round(attached.costs.cost_pct(&traps, secs)),
        measured_pct: baseline
            .zip(cpu_start.zip(cpu_end))
            .and_then(|(b, (from, to))| b.overhead_pct(&from, &to))
            .map(round),
        traps,
        trap_costs: attached.costs,
    });
    drop(attached);
    write(json, &report, color)?;
    if let Some(h) = html {
        h.write(None, Some(&report))?;
    }
    Ok(Exit::Ok.into())
}
