//! gilwatch: is it the GIL, and who is to blame?
//!
//! The data path, top to bottom: locate the interpreter in the target and plan the probes
//! (`gil::prepare`), attach them (`probe::attach`), let the kernel aggregate, read the maps
//! (`collect`), report (`report`). `session` runs the clock in between; `doctor` explains a plan.
//! This file only wires those stages together; nothing calls back into it.
mod blame;
mod cli;
mod collect;
mod doctor;
mod ending;
mod error;
mod exporter;
mod fleet;
mod gil;
mod handoff;
mod histogram;
mod lock;
mod lock_run;
mod names;
mod object;
mod probe;
mod python;
mod report;
mod runbook;
mod session;
mod status;
mod stop;
mod target;
mod thread_group;
mod top;
mod trace;

use std::{fs::File, io::Write, process::ExitCode};

use anyhow::Context as _;
use clap::Parser as _;

use crate::{
    cli::{Cli, Sub},
    error::{Exit, exit_code_of, user},
    gil::{
        address, locate, plan,
        prepare::{self, Planned},
    },
    lock::spec::LockRequest,
    names::ThreadNames,
    probe::{attach, preflight},
    report::{EndReason, InterpreterInfo, RunInfo, canvas::Canvas, html::HtmlFile},
    session::{Outputs, Session},
    target::{launch, process::Process},
};

fn main() -> ExitCode {
    // A panic must still read as one line, and unwinding runs the destructors that detach probes.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("gilwatch: internal error: {msg}{at} (probes were removed; please report this)");
    }));
    // First of all, before even the arguments are read: a `-- CMD` run must not lose a
    // SIGINT/SIGTERM that arrives while it starts (see `stop`); other runs restore the mask.
    let blocked = stop::block();
    let cli = Cli::parse();
    let blocked = match blocked {
        Ok(b) if cli.sub.is_none() && cli.pids.is_empty() && !cli.is_fleet() => Ok(Some(b)),
        Ok(b) => b.restore().map(|()| None),
        Err(e) => Err(e),
    };
    let result = match (&cli.sub, blocked) {
        (_, Err(e)) => Err(e),
        (Some(Sub::Doctor { pid, strategy }), _) => {
            doctor::run(*pid, *strategy).map(|()| Exit::Ok.into())
        }
        (
            Some(Sub::Diff {
                before,
                after,
                json,
                fail_if,
            }),
            _,
        ) => diff(before, after, json.as_deref(), fail_if),

        (&Some(Sub::Top { interval, .. }), _) if interval.is_zero() => Err(user(
            Exit::Usage,
            "top refreshes every --interval: give it one above 0 (examples: 1s, 500ms)",
        )),
        (
            &Some(Sub::Top {
                pid,
                interval,
                duration,
                strategy,
                max_overhead,
            }),
            _,
        ) => top::require_terminal().and_then(|()| {
            // The plain run's path with the view as its output; the rest at its defaults.
            let mut top = Cli::parse_from(["gilwatch", "-p", &pid.to_string()]);
            top.top = true;
            top.interval = Some(interval);
            top.duration = duration;
            top.strategy = strategy;
            top.max_overhead = max_overhead;
            top.quiet = true;
            run(top, None)
        }),
        (None, Ok(_)) if cli.is_fleet() => fleet::run(&cli),
        (None, Ok(blocked)) => run(cli, blocked),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let exit = exit_code_of(&err);
            if exit == Exit::Internal {
                eprintln!("gilwatch: error: {err:#}");
            } else {
                // The user error's own line, even when a caller added context above it.
                let line = err
                    .chain()
                    .find_map(|e| e.downcast_ref::<error::UserError>())
                    .map_or_else(|| err.to_string(), |u| u.message.clone());
                eprintln!("gilwatch: {line}");
            }
            exit.into()
        }
    }
}

/// `gilwatch diff`: two saved reports compared, written, and the conditions' exit code.
fn diff(
    before: &std::path::Path,
    after: &std::path::Path,
    json: Option<&std::path::Path>,
    fail_if: &[runbook::condition::Condition],
) -> anyhow::Result<ExitCode> {
    let b = runbook::saved::SavedReport::read(before)?;
    let a = runbook::saved::SavedReport::read(after)?;
    let d = runbook::diff::compare((before, &b), (after, &a), fail_if);
    let table = runbook::diff::render(&d);
    match json {
        Some(p) if p.as_os_str() == "-" => {
            eprint!("{table}");
            report::json::write_line(&mut std::io::stdout(), &d)?;
        }
        Some(p) => {
            print!("{table}");
            let mut f = File::create(p).map_err(|e| {
                user(
                    Exit::Usage,
                    format!("cannot write --json {}: {e}", p.display()),
                )
            })?;
            report::json::write_line(&mut f, &d)?;
        }
        None => print!("{table}"),
    }
    Ok(if d.failed() {
        Exit::ConditionHeld
    } else {
        Exit::Ok
    }
    .into())
}

/// `--fail-if` on a run's final report: each condition's line, and exit 7 when one held.
fn judge_run(
    report: &report::Report,
    fail_if: &[runbook::condition::Condition],
) -> anyhow::Result<bool> {
    if fail_if.is_empty() {
        return Ok(false);
    }
    let saved = runbook::saved::SavedReport::of(report)?;
    let figures = runbook::figures::Figures::process(&saved);
    let mut failed = false;
    for c in fail_if {
        let v = c.judge(&figures);
        eprintln!("gilwatch: {v}");
        failed |= v.held;
    }
    Ok(failed)
}

/// What a run watches.
enum Watched<'a> {
    /// A running process or a gated `-- CMD`, planned for.
    Gil {
        process: Process,
        planned: Box<Planned>,
        child: Option<launch::GatedChild>,
    },
    /// A process whose GIL is out of reach, watched for its locks alone.
    LocksOnly(Process, &'a LockRequest),
}

/// `blocked`: with `-- CMD`, the stop signals as `main` blocked them.
fn run(cli: Cli, blocked: Option<stop::Blocked>) -> anyhow::Result<ExitCode> {
    if let Some(addr) = cli.prometheus {
        exporter::address::check(addr, cli.prometheus_public).map_err(|m| user(Exit::Usage, m))?;
    }
    preflight::check_kernel()?;
    preflight::check_privileges()?;

    // The target's CPU time before anything is attached: the baseline its probed time is
    // compared with (probe/cpu_time.rs).
    let cpu_at_start = cli
        .pid()
        .and_then(|pid| probe::cpu_time::CpuTime::read(pid).ok());
    let lock_request = cli.lock_request();
    let html = cli.html.as_deref().map(HtmlFile::create).transpose()?;
    let mut status = status::Status::stderr();
    status.say(&match cli.pid() {
        Some(pid) => format!("locating CPython in PID {pid}"),
        None => format!("locating CPython for {}", cli.command.join(" ")),
    });
    let (process, planned, child) = match watched(&cli, lock_request.as_ref(), blocked.as_ref())? {
        Watched::Gil {
            process,
            planned,
            child,
        } => (process, planned, child),
        Watched::LocksOnly(process, request) => {
            if !cli.fail_if.is_empty() || cli.prometheus.is_some() {
                return Err(user(
                    Exit::Usage,
                    "--fail-if and --prometheus need a GIL report, and this process has none to give (see above)",
                ));
            }
            if cli.trace.is_some() {
                eprintln!("gilwatch: --trace: no GIL to trace here, no trace written");
            }
            status.clear();
            return lock_run::run_without_gil(
                request,
                process,
                cli.duration,
                cli.json.as_deref(),
                html,
                cli.color,
            );
        }
    };
    let Planned {
        interpreter,
        mut plan,
        ..
    } = *planned;
    let mut locks = lock_request
        .as_ref()
        .map(|request| lock::prepare(&process, request))
        .transpose()?;
    // Sites: the GIL's and the locks' probes together (a function both probe gets one site).
    probe::site::apply(
        &mut plan.points,
        locks.as_mut().map_or(&mut [], |l| l.probes_mut()),
    );
    status.say(&format!(
        "attaching {} probe(s) to CPython {} (measuring what a probe costs here)",
        plan.points.len(),
        interpreter.version
    ));
    let mut blame = blame::Blame::new(
        blame::BlameOptions {
            enabled: !cli.no_blame,
            min: cli.blame_min,
        },
        &plan,
        &interpreter,
        process.pid,
    );
    let mut attached = attach_all(
        &plan,
        &process,
        child.is_some(),
        locks.as_mut(),
        blame.is_wanted(),
        cli.trace.is_some(),
    )?;
    if cli.offcpu {
        handoff::attach_offcpu(&mut attached.ebpf, process.pid)?;
    }
    let gil_location = if child.is_none() {
        status.say("finding the GIL in the process's memory");
        place_gil(&mut attached, &plan, &process, &interpreter, &mut blame)?
    } else {
        // A gated command has not mapped its interpreter yet: the session finds the GIL.
        None
    };
    let cpu_baseline = cpu_at_start
        .zip(attached.cpu_before_attach)
        .and_then(|(a, b)| probe::cpu_time::Baseline::between(&a, &b));
    status.clear();
    run_attached(
        cli,
        Attachment {
            cpu_baseline,
            process,
            interpreter,
            plan,
            attached,
            child,
            gil_location,
            locks,
            blame,
        },
        html,
    )
}

/// Locates and plans for `-p PID`, or for `-- CMD` and then starts it held at its gate.
/// `locks`: the lock options, which can watch a process whose GIL is out of reach.
fn watched<'a>(
    cli: &Cli,
    locks: Option<&'a LockRequest>,
    blocked: Option<&stop::Blocked>,
) -> anyhow::Result<Watched<'a>> {
    let Some(pid) = cli.pid() else {
        let resolved = launch::resolve(&cli.command)?;
        let planned = prepare::prepare_command(&resolved, &cli.command, cli.strategy)?;
        let blocked = blocked.context("stop signals not blocked")?;
        let child = launch::spawn_gated(&cli.command, blocked)?;
        return Ok(Watched::Gil {
            process: Process { pid: child.pid },
            planned: Box::new(planned),
            child: Some(child),
        });
    };
    let process = Process::open(pid)?;
    match prepare::prepare(&process, cli.strategy) {
        Ok(planned) => Ok(Watched::Gil {
            process,
            planned: Box::new(planned),
            child: None,
        }),
        Err(e) => match locks {
            // Not a CPython, or a CPython whose GIL cannot be probed: with lock options, the
            // locks alone.
            Some(request) if e.gil_unsupported() => {
                if e.stage == prepare::Stage::Plan {
                    eprintln!("gilwatch: no GIL report: {}", e.error);
                }
                Ok(Watched::LocksOnly(process, request))
            }
            _ => Err(e.into()),
        },
    }
}

/// Loads and attaches the GIL's probes, then the locks' (`launched`: the target is a gated
/// command, which cannot have exited yet; `trace`: the kernel writes span records).
fn attach_all(
    plan: &plan::ProbePlan,
    process: &Process,
    launched: bool,
    locks: Option<&mut lock::LockWatch>,
    blame: bool,
    trace: bool,
) -> anyhow::Result<attach::Attached> {
    let needs = attach::MapNeeds {
        blame,
        gil: true,
        locks: locks.is_some(),
        call_sites: locks.as_deref().is_some_and(|l| l.discover),
        trace_bytes: trace.then_some(trace::RING_BYTES),
    };
    let mut attached = attach::attach(plan, process.pid, needs).map_err(|e| {
        if !launched && !process.is_alive() {
            user(
                Exit::NoSuchProcess,
                format!("PID {} exited while gilwatch was attaching", process.pid),
            )
        } else {
            e
        }
    })?;
    if let Some(l) = locks {
        l.attach(&mut attached)?;
        attached.count_lock_sites(l.probes())?;
        l.announce();
    }
    Ok(attached)
}

/// Finds the GIL of a running process where the plan (or a free-threaded build) needs it, and
/// gives its address to the probes that filter by it; returns how it was found.
fn place_gil(
    attached: &mut attach::Attached,
    plan: &plan::ProbePlan,
    process: &Process,
    interpreter: &locate::Interpreter,
    blame: &mut blame::Blame,
) -> anyhow::Result<Option<String>> {
    let wants_gil = plan.needs_gil_address() || plan.wants_gil_address();
    if !wants_gil && !interpreter.free_threaded {
        return Ok(None);
    }
    let gil = match address::find(process, interpreter) {
        Ok(gil) => gil,
        // Two-trap symtab works without it (any timed wait inside take_gil is the GIL's).
        Err(_) if !plan.needs_gil_address() && !interpreter.free_threaded => return Ok(None),
        Err(e) => return Err(e),
    };
    if gil.enabled == Some(false) {
        return Err(user(
            Exit::Unsupported,
            format!(
                "PID {} runs free-threaded CPython {} with the GIL disabled: there is no GIL to wait for \
                 (run it with PYTHON_GIL=1 to measure what the GIL would cost)",
                process.pid, interpreter.version
            ),
        ));
    }
    if wants_gil {
        attached.set_gil_address(&gil)?;
        blame.arm(attached, interpreter, &gil);
    }
    Ok(Some(gil.how))
}

/// Everything in place once the probes are attached.
struct Attachment {
    process: Process,
    interpreter: locate::Interpreter,
    plan: plan::ProbePlan,
    attached: attach::Attached,
    child: Option<launch::GatedChild>,
    gil_location: Option<String>,
    locks: Option<lock::LockWatch>,
    cpu_baseline: Option<probe::cpu_time::Baseline>,
    blame: blame::Blame,
}

/// The run once probes are in place: watch (the session releases a gated command), report.
/// `html`: the `--html` file, written last.
fn run_attached(cli: Cli, a: Attachment, html: Option<HtmlFile>) -> anyhow::Result<ExitCode> {
    let Attachment {
        process,
        mut interpreter,
        plan,
        mut attached,
        child,
        gil_location,
        locks,
        cpu_baseline,
        blame,
    } = a;
    let info_interp = InterpreterInfo::of(&interpreter, &plan, gil_location);
    let names = ThreadNames::new(
        process.clone(),
        interpreter.version.minor_version(),
        interpreter.runtime_address_of("_PyRuntime"),
    );
    let outputs = outputs(
        &cli,
        format!(
            "gilwatch top · PID {} · CPython {}",
            process.pid, interpreter.version
        ),
    )?;
    let info = RunInfo {
        pid: process.pid,
        ns_pid: process.namespace_pid(),
        command: (!cli.command.is_empty()).then_some(cli.command.as_slice()),
        exit_code: None,
        interpreter: info_interp,
        max_overhead_pct: cli.max_overhead.0,
        trap_costs: attached.costs,
        handoff: report::handoff::HandoffCaps {
            forced_known: plan.wants_gil_address(),
            offcpu: cli.offcpu,
        },
    };
    let exporter = cli
        .prometheus
        .map(|addr| exporter::server::Exporter::start(addr, process.pid))
        .transpose()?;
    if let Some(e) = &exporter {
        eprintln!(
            "gilwatch: serving GIL metrics of PID {} at http://{}/metrics",
            process.pid, e.addr
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let gil_pending = (plan.needs_gil_address() || plan.wants_gil_address()) && child.is_some();
    let lock_process = process.clone();
    let tracer = cli
        .trace
        .as_deref()
        .map(|path| trace::Tracer::start(path, &mut attached.ebpf))
        .transpose()?;
    let session = Session {
        attached: &mut attached,
        process,
        child,
        interpreter: &mut interpreter,
        names,
        info,
        duration: cli.duration,
        gil_pending,
        max_overhead: cli.max_overhead.0,
        cpu_baseline,
        exporter: exporter.as_ref(),
        children_cpu: cli
            .pid()
            .map(|_| fleet::hint::ChildrenCpu::read(lock_process.pid)),
        blame,
        trace: tracer,
    };
    let report = runtime.block_on(session.run(outputs))?;
    drop(exporter);
    let mut lock_report = None;
    if let Some(l) = &locks {
        // Python thread names from the GIL report where it has them.
        let mut names = lock_process.threads();
        names.extend(report.threads.iter().map(|t| (t.tid, t.name.clone())));
        let report = lock_run::report(l, &mut attached.ebpf, report.ended, &names)?;
        lock_run::write(cli.json.as_deref(), &report, cli.color)?;
        lock_report = Some(report);
    }
    // Detach before exiting (also what happens on every error path, as `attached` drops).
    drop(attached);
    if let Some(h) = html {
        h.write(Some(&report), lock_report.as_ref())?;
    }

    if judge_run(&report, &cli.fail_if)? {
        return Ok(Exit::ConditionHeld.into());
    }
    Ok(match (report.exit_code, report.ended) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, EndReason::Interrupted) if !cli.command.is_empty() => ExitCode::from(130),
        (None, EndReason::Terminated) if !cli.command.is_empty() => ExitCode::from(143),
        _ => Exit::Ok.into(),
    })
}

/// `title`: the heading of `gilwatch top`'s screen.
fn outputs(cli: &Cli, title: String) -> anyhow::Result<Outputs> {
    let json: Option<Box<dyn Write>> = match cli.json.as_deref() {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
        Some(p) => Some(Box::new(File::create(p).map_err(|e| {
            user(
                Exit::Usage,
                format!("cannot write --json {}: {e}", p.display()),
            )
        })?)),
    };
    let (human, canvas): (Box<dyn Write>, _) = if cli.json_to_stdout() {
        let err = std::io::stderr();
        let canvas = Canvas::of(&err, cli.color);
        (Box::new(err), canvas)
    } else {
        let out = std::io::stdout();
        let canvas = Canvas::of(&out, cli.color);
        (Box::new(out), canvas)
    };
    let json_intervals = cli.interval.is_some() && json.is_some();
    let interval = (json_intervals || !cli.quiet || cli.top)
        .then(|| cli.interval.unwrap_or(cli::DEFAULT_INTERVAL));
    let top = cli.top.then(|| top::Top::start(title)).transpose()?;
    Ok(Outputs {
        human,
        json,
        interval,
        live: !cli.quiet,
        json_intervals,
        canvas,
        top,
    })
}
