//! gilwatch: is it the GIL, and who is to blame?
//!
//! The data path, top to bottom: locate the interpreter in the target and plan the probes
//! (`gil::prepare`), attach them (`probe::attach`), let the kernel aggregate, read the maps
//! (`collect`), report (`report`). `session` runs the clock in between; `doctor` explains a plan.
//! This file only wires those stages together; nothing calls back into it.
mod cli;
mod collect;
mod doctor;
mod ending;
mod error;
mod gil;
mod histogram;
mod lock;
mod lock_run;
mod names;
mod object;
mod probe;
mod python;
mod report;
mod session;
mod stop;
mod target;
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
    report::{EndReason, InterpreterInfo, RunInfo},
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
        Ok(b) if cli.sub.is_none() && cli.pid.is_none() => Ok(Some(b)),
        Ok(b) => b.restore().map(|()| None),
        Err(e) => Err(e),
    };
    let result = match (&cli.sub, blocked) {
        (_, Err(e)) => Err(e),
        (Some(Sub::Doctor { pid, strategy }), _) => {
            doctor::run(*pid, *strategy).map(|()| Exit::Ok.into())
        }
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
    preflight::check_kernel()?;
    preflight::check_privileges()?;

    // The target's CPU time before anything is attached: the baseline its probed time is
    // compared with (probe/cpu_time.rs).
    let cpu_at_start = cli
        .pid
        .and_then(|pid| probe::cpu_time::CpuTime::read(pid).ok());
    let lock_request = cli.lock_request();
    let (process, planned, child) = match watched(&cli, lock_request.as_ref(), blocked.as_ref())? {
        Watched::Gil {
            process,
            planned,
            child,
        } => (process, planned, child),
        Watched::LocksOnly(process, request) => {
            if cli.trace.is_some() {
                eprintln!("gilwatch: --trace: no GIL to trace here, no trace written");
            }
            return lock_run::run_without_gil(request, process, cli.duration, cli.json.as_deref());
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
    let mut attached = attach_all(
        &plan,
        &process,
        child.is_some(),
        locks.as_mut(),
        cli.trace.is_some(),
    )?;
    let gil_location = if child.is_none() {
        place_gil(&mut attached, &plan, &process, &interpreter)?
    } else {
        // A gated command has not mapped its interpreter yet: the session finds the GIL.
        None
    };
    let cpu_baseline = cpu_at_start
        .zip(attached.cpu_before_attach)
        .and_then(|(a, b)| probe::cpu_time::Baseline::between(&a, &b));
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
        },
    )
}

/// Locates and plans for `-p PID`, or for `-- CMD` and then starts it held at its gate.
/// `locks`: the lock options, which can watch a process whose GIL is out of reach.
fn watched<'a>(
    cli: &Cli,
    locks: Option<&'a LockRequest>,
    blocked: Option<&stop::Blocked>,
) -> anyhow::Result<Watched<'a>> {
    let Some(pid) = cli.pid else {
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
    trace: bool,
) -> anyhow::Result<attach::Attached> {
    let needs = attach::MapNeeds {
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
}

/// The run once probes are in place: watch (the session releases a gated command), report.
fn run_attached(cli: Cli, a: Attachment) -> anyhow::Result<ExitCode> {
    let Attachment {
        process,
        mut interpreter,
        plan,
        mut attached,
        child,
        gil_location,
        locks,
        cpu_baseline,
    } = a;
    let info_interp = InterpreterInfo {
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
    };
    let names = ThreadNames::new(
        process.clone(),
        interpreter.version.minor_version(),
        interpreter.runtime_address_of("_PyRuntime"),
    );
    let outputs = outputs(&cli)?;
    let info = RunInfo {
        pid: process.pid,
        ns_pid: process.namespace_pid(),
        command: (!cli.command.is_empty()).then_some(cli.command.as_slice()),
        exit_code: None,
        interpreter: info_interp,
        max_overhead_pct: cli.max_overhead.0,
        trap_costs: attached.costs,
    };
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
        trace: tracer,
    };
    let report = runtime.block_on(session.run(outputs))?;
    if let Some(l) = &locks {
        // Python thread names from the GIL report where it has them.
        let mut names = lock_process.threads();
        names.extend(report.threads.iter().map(|t| (t.tid, t.name.clone())));
        let report = lock_run::report(l, &mut attached.ebpf, report.ended, &names)?;
        lock_run::write(cli.json.as_deref(), &report)?;
    }
    // Detach before exiting (also what happens on every error path, as `attached` drops).
    drop(attached);

    Ok(match (report.exit_code, report.ended) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, EndReason::Interrupted) if !cli.command.is_empty() => ExitCode::from(130),
        (None, EndReason::Terminated) if !cli.command.is_empty() => ExitCode::from(143),
        _ => Exit::Ok.into(),
    })
}

fn outputs(cli: &Cli) -> anyhow::Result<Outputs> {
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
    let human: Box<dyn Write> = if cli.json_to_stdout() {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let json_intervals = cli.interval.is_some() && json.is_some();
    let interval =
        (json_intervals || !cli.quiet).then(|| cli.interval.unwrap_or(cli::DEFAULT_INTERVAL));
    Ok(Outputs {
        human,
        json,
        interval,
        live: !cli.quiet,
        json_intervals,
    })
}
