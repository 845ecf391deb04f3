//! Named locks: pthread mutexes by symbol or address (`--lock`), custom lock functions
//! (`--lock-fns`) and discovery of every contended mutex (`--mutexes`).
//!
//! The data path, top to bottom: parse what was asked (`spec`), read the target's address space
//! (`objects`), resolve names to addresses (`locate`), plan the probes (`plan`), attach them on the
//! shared BPF object (`attach`), wait (`session`, for processes without a GIL), read the maps
//! (`collect`), name call sites (`symbolize`), report (`report::lock`, `report::lock_terminal`).
pub mod attach;
pub mod collect;
pub mod locate;
pub mod objects;
pub mod plan;
pub mod session;
pub mod spec;
pub mod symbolize;

use std::{collections::HashMap, fs::OpenOptions, io::Write, process::ExitCode};

use anyhow::Context as _;
use aya::Ebpf;

use crate::{
    cli::Cli,
    error::{Exit, user},
    gil::plan::ProbePlan,
    lock::{collect::LockSnapshot, objects::AddressSpace, plan::LockProbe},
    probe::attach as gil_attach,
    report::{
        EndReason,
        lock::{self as lock_report, LockContext, LockReport, Named},
        lock_terminal,
    },
    target::process::Process,
};

/// Frames shown per call site.
const CALL_SITE_DEPTH: usize = 4;

/// The lock options of a command line.
pub fn requested(cli: &Cli) -> bool {
    !cli.locks.is_empty() || !cli.lock_fns.is_empty() || cli.mutexes
}

/// Locks resolved in a target and the probes that watch them (nothing attached yet).
pub struct LockWatch {
    pid: u32,
    discover: bool,
    named: Vec<Named>,
    custom_labels: Vec<String>,
    probes: Vec<LockProbe>,
    space: AddressSpace,
    start: LockSnapshot,
}

/// Resolves every `--lock`/`--lock-fns` against the target and plans the probes: all the user's
/// mistakes are reported here, before anything is attached.
pub fn prepare(process: &Process, cli: &Cli) -> anyhow::Result<LockWatch> {
    let pid = process.pid;
    let space = AddressSpace::read(process)?;
    let mut named: Vec<Named> = Vec::new();
    for spec in &cli.locks {
        let w = locate::resolve_lock(&space, pid, spec)?;
        if !named.iter().any(|n| n.addr == w.addr) {
            named.push(Named {
                addr: w.addr,
                spec: w.spec,
                symbol: w.symbol,
            });
        }
    }
    let mut probes = Vec::new();
    if !cli.locks.is_empty() || cli.mutexes {
        probes.extend(plan::pthread_probes(&space, pid)?);
    }
    let mut custom_labels = Vec::new();
    for (i, f) in cli.lock_fns.iter().enumerate() {
        if i > 0x7f {
            return Err(user(Exit::Usage, "at most 128 --lock-fns at once"));
        }
        let what = format!("--lock-fns {}:{}", f.acquire, f.release);
        let acquire = locate::resolve_function(&space, pid, &f.acquire, &what)?;
        let release = locate::resolve_function(&space, pid, &f.release, &what)?;
        probes.extend(plan::custom_probes(&acquire, &release, f.arg, i as u8));
        custom_labels.push(if f.arg == 0 {
            format!("{}:{}", f.acquire, f.release)
        } else {
            format!("{}:{}:{}", f.acquire, f.release, f.arg)
        });
    }
    Ok(LockWatch {
        pid,
        discover: cli.mutexes,
        named,
        custom_labels,
        probes,
        space,
        start: LockSnapshot::default(),
    })
}

impl LockWatch {
    /// Attaches the lock probes on the loaded BPF object; measuring starts now.
    pub fn attach(&mut self, ebpf: &mut Ebpf) -> anyhow::Result<()> {
        let watch: Vec<u64> = self.named.iter().map(|n| n.addr).collect();
        attach::attach(
            ebpf,
            &attach::LockConfig {
                pid: self.pid,
                all: self.discover,
                stacks: self.discover,
                watch: &watch,
            },
            &self.probes,
        )?;
        self.start = LockSnapshot {
            at_ns: crate::collect::monotonic_ns(),
            ..Default::default()
        };
        // The run is silent until its report: say that measuring has begun (scripts and the
        // tests wait for this line before starting the workload).
        let mut parts = Vec::new();
        if self.discover {
            parts.push("every pthread mutex".to_owned());
        } else if !self.named.is_empty() {
            parts.push(format!("{} lock(s)", self.named.len()));
        }
        if !self.custom_labels.is_empty() {
            parts.push(format!(
                "{} lock function pair(s)",
                self.custom_labels.len()
            ));
        }
        let what = parts.join(" and ");
        eprintln!("gilwatch: watching {what} in PID {}", self.pid);
        Ok(())
    }

    /// The final report: reads the maps, names threads, symbolizes call sites. `names`: the best
    /// names known (Python names from the GIL report, OS names); threads missing there get the
    /// name the kernel saw.
    pub fn report(
        &self,
        ebpf: &Ebpf,
        ended: EndReason,
        names: &HashMap<u32, String>,
    ) -> anyhow::Result<LockReport> {
        let snap = collect::snapshot(ebpf)?;
        let thread_name = |tid: u32| names.get(&tid).cloned();
        let describe = |addr: u64| self.space.describe(addr);
        let call_site = |caller: u64, id: u32| {
            let stack = collect::stack(ebpf, id);
            symbolize::call_site(self.pid, &self.space, caller, &stack, CALL_SITE_DEPTH)
        };
        let ctx = LockContext {
            pid: self.pid,
            discover: self.discover,
            probes: plan::symbols(&self.probes),
            named: &self.named,
            custom_labels: &self.custom_labels,
            thread_name: &thread_name,
            describe: &describe,
            call_site: &call_site,
        };
        Ok(lock_report::build(&ctx, ended, &self.start, &snap))
    }
}

/// Writes the lock report where the GIL report went: the human one to stdout (stderr with
/// `--json -`), the JSON line to stdout or appended to the `--json` file.
pub fn write(cli: &Cli, report: &LockReport) -> anyhow::Result<()> {
    let text = lock_terminal::final_report(report);
    if cli.json_to_stdout() {
        eprint!("{text}");
    } else {
        print!("{text}");
        std::io::stdout().flush().ok();
    }
    match cli.json.as_deref() {
        None => Ok(()),
        Some(p) if p.as_os_str() == "-" => lock_report::write_line(&mut std::io::stdout(), report),
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
            lock_report::write_line(&mut f, report)
        }
    }
}

/// A process without a GIL (C, C++, Rust…): locks only.
pub fn run_without_gil(cli: &Cli, process: Process) -> anyhow::Result<ExitCode> {
    let mut watch = prepare(&process, cli)?;
    // The BPF object with no GIL probe attached: its maps and the mutex programs.
    let empty = ProbePlan {
        strategy: "none",
        symbols_from: None,
        points: Vec::new(),
        blind_spots: Vec::new(),
        traps_per_cycle: crate::gil::plan::Traps {
            uprobes: 0,
            uretprobes: 0,
        },
        notes: Vec::new(),
    };
    let mut attached = gil_attach::attach(&empty, process.pid)?;
    watch.attach(&mut attached.ebpf).map_err(|e| {
        if !process.is_alive() {
            user(
                Exit::NoSuchProcess,
                format!("PID {} exited while gilwatch was attaching", process.pid),
            )
        } else {
            e
        }
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let mut names = HashMap::new();
    let ended = runtime.block_on(session::wait(&process, cli.duration, &mut names))?;
    let report = watch.report(&attached.ebpf, ended, &names)?;
    drop(attached);
    write(cli, &report)?;
    Ok(Exit::Ok.into())
}
