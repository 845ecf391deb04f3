//! Several processes in one run (`-p A -p B`, `--children`, `--name`, `--all`): one loaded BPF
//! object for all of them (the kernel keys per-process state by tgid, each uprobe link is for
//! one PID), processes that appear during the run planned for and probed as they come, those
//! that exit reported as exited while the others go on. The run ends at `-d`, Ctrl-C, SIGTERM,
//! or when every observed process is gone and none can come (no `--children`, `--name`, `--all`).
pub mod hint;
pub mod report;
pub mod select;

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};

use self::{
    report::{FleetReport, ProcessEntry, Role, Skipped},
    select::{Seen, Selection},
};
use crate::{
    cli::Cli,
    collect::{self, Snapshot},
    error::{Exit, exit_code_of, user},
    gil::{
        address,
        prepare::{self, Planned},
    },
    names::ThreadNames,
    probe::{
        attach::{self, Attached},
        budget::{DutyCycle, Switch},
        cost::Hits,
        preflight,
    },
    report::{EndReason, InterpreterInfo, RunInfo, canvas::Canvas, json},
    stop::{self, Event, Watcher},
    target::{pidfd::PidFd, process::Process},
};

/// How often the host is scanned for processes that joined or left the selection, and the
/// observed ones are checked for exit: a recycled worker is observed within about this long
/// (plus its planning).
const SCAN_EVERY: Duration = Duration::from_millis(500);
/// How often threads are named.
const NAMES_EVERY: Duration = Duration::from_millis(200);

/// One observed process.
struct Member {
    process: Process,
    comm: String,
    exe: String,
    /// The nearest observed ancestor at the time it joined.
    parent: Option<u32>,
    info: InterpreterInfo,
    names: ThreadNames,
    /// Its numbers when observing it began (its threads only).
    from: Snapshot,
    joined_after_ns: u64,
    /// From its start to its probes being in, for a process that started during the run.
    picked_up_after_ns: Option<u64>,
    /// Its numbers when it exited (its threads only), once it has.
    last: Option<Snapshot>,
    /// The files its probes are attached by (`/proc/self/fd/N`): duty cycling attaches them
    /// again.
    _files: Vec<crate::object::file::ObjectFile>,
}

/// What the run is doing: the loaded object, the observed processes, and who was left out.
struct Fleet {
    attached: Attached,
    members: Vec<Member>,
    /// tid → tgid, from the kernel, kept after threads (and processes) are gone.
    owners: HashMap<u32, u32>,
    /// Selected processes that do not run CPython: pid → the executable it had then (a fork
    /// that later execs a Python is looked at again).
    ignored: HashMap<u32, String>,
    skipped: Vec<Skipped>,
    strategy: crate::gil::plan::Strategy,
    selection: Selection,
    start_ns: u64,
    duty: Option<DutyCycle>,
    max_overhead: Option<f64>,
    trap_costs: crate::probe::cost::TrapCosts,
}

/// `gilwatch -p A -p B …`, `--children`, `--name`, `--all`.
pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    if cli.lock_request().is_some()
        || !cli.fail_if.is_empty()
        || cli.prometheus.is_some()
        || cli.html.is_some()
        || cli.trace.is_some()
    {
        return Err(user(
            Exit::Usage,
            "--lock, --lock-fns, --mutexes, --py-locks, --fail-if, --prometheus, --html and --trace watch one process: give a single -p PID",
        ));
    }
    preflight::check_kernel()?;
    preflight::check_privileges()?;
    let selection = Selection {
        pids: cli.pids.clone(),
        children: cli.children,
        name: cli.name.clone(),
        all: cli.all,
    };
    for &pid in &selection.pids {
        Process::open(pid)?;
    }
    let host = select::scan();
    let chosen = selection.resolve(&host);
    let mut planned: Vec<(Process, Planned, Option<u32>)> = Vec::new();
    let mut skipped = Vec::new();
    let mut ignored = HashMap::new();
    let mut pids: Vec<u32> = chosen.keys().copied().collect();
    pids.sort();
    for pid in pids {
        let named = selection.pids.contains(&pid);
        match plan_for(pid, cli.strategy, named) {
            Ok(p) => {
                let parent = observed_parent(&host, pid, &chosen);
                planned.push((Process { pid }, p, parent));
            }
            Err(Some(why)) => skipped.push(Skipped {
                pid,
                comm: Process { pid }.comm(),
                why,
            }),
            Err(None) => {
                ignored.insert(pid, select::exe_of(pid));
            }
        }
    }
    for s in &skipped {
        eprintln!(
            "gilwatch: not observing PID {} ({}): {}",
            s.pid, s.comm, s.why
        );
    }
    if planned.is_empty() {
        return Err(user(
            Exit::Unsupported,
            format!(
                "no CPython process among the {} selected ({}): check with pgrep -a python",
                chosen.len(),
                selection_text(&selection)
            ),
        ));
    }
    let first = &planned[0];
    let needs = attach::MapNeeds {
        gil: true,
        locks: false,
        call_sites: false,
        // Blame keeps one holder and one configuration per run (one process's GIL): off here.
        blame: false,
        trace_bytes: None,
    };
    let attached = attach::attach(&first.1.plan, first.0.pid, needs)?;
    let trap_costs = attached.costs;
    let mut fleet = Fleet {
        attached,
        members: Vec::new(),
        owners: HashMap::new(),
        ignored,
        skipped,
        strategy: cli.strategy,
        selection: selection.clone(),
        start_ns: 0,
        duty: None,
        max_overhead: cli.max_overhead.0,
        trap_costs,
    };
    for (i, (process, p, parent)) in planned.into_iter().enumerate() {
        if let Err(e) = fleet.join(process.clone(), p, parent, i == 0) {
            if !process.is_alive() {
                continue;
            }
            eprintln!("gilwatch: not observing PID {}: {e:#}", process.pid);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    // The summary per role every --interval (numbers since the start), unless -q.
    let live = (!cli.quiet).then(|| {
        cli.interval
            .filter(|d| !d.is_zero())
            .unwrap_or(crate::cli::DEFAULT_INTERVAL)
    });
    let report = runtime.block_on(fleet.watch(cli.duration, live, cli.json_to_stdout()))?;
    drop(fleet);
    write(cli, &report)?;
    Ok(Exit::Ok.into())
}

/// Plans for one process: Err(Some(why)) for a process named by `-p` that cannot be observed
/// (said, and the run goes on), Err(None) for one that does not run CPython at all (ignored
/// silently unless named).
fn plan_for(
    pid: u32,
    strategy: crate::gil::plan::Strategy,
    named: bool,
) -> Result<Planned, Option<String>> {
    if !named && !select::looks_like_python(pid) {
        return Err(None);
    }
    match prepare::prepare(&Process { pid }, strategy) {
        Ok(mut p) => {
            // Each probe on its cheapest instruction, as for a single process.
            crate::probe::site::apply(&mut p.plan.points, &mut []);
            Ok(p)
        }
        Err(e) if !named && e.gil_unsupported() && e.stage == prepare::Stage::Interpreter => {
            Err(None)
        }
        Err(e) => {
            let line = e
                .error
                .chain()
                .find_map(|c| c.downcast_ref::<crate::error::UserError>())
                .map_or_else(|| format!("{:#}", e.error), |u| u.message.clone());
            Err(Some(line))
        }
    }
}

/// The nearest ancestor of `pid` that is selected.
fn observed_parent(host: &HashMap<u32, Seen>, pid: u32, chosen: &HashMap<u32, u32>) -> Option<u32> {
    let mut at = pid;
    for _ in 0..64 {
        let ppid = host.get(&at)?.ppid;
        if ppid <= 1 || ppid == at {
            return None;
        }
        if chosen.contains_key(&ppid) {
            return Some(ppid);
        }
        at = ppid;
    }
    None
}

fn selection_text(s: &Selection) -> String {
    let mut parts: Vec<String> = s.pids.iter().map(|p| format!("-p {p}")).collect();
    if s.children {
        parts.push("--children".into());
    }
    if let Some(n) = &s.name {
        parts.push(format!("--name {n}"));
    }
    if s.all {
        parts.push("--all".into());
    }
    parts.join(" ")
}

fn write(cli: &Cli, r: &FleetReport) -> anyhow::Result<()> {
    if cli.json_to_stdout() {
        let err = std::io::stderr();
        eprint!("{}", report::render(r, &Canvas::of(&err, cli.color)));
    } else {
        let out = std::io::stdout();
        print!("{}", report::render(r, &Canvas::of(&out, cli.color)));
        std::io::stdout().flush().ok();
    }
    match cli.json.as_deref() {
        None => {}
        Some(p) if p.as_os_str() == "-" => json::write_line(&mut std::io::stdout(), r)?,
        Some(p) => {
            let mut f = std::fs::File::create(p).map_err(|e| {
                user(
                    Exit::Usage,
                    format!("cannot write --json {}: {e}", p.display()),
                )
            })?;
            json::write_line(&mut f, r)?;
        }
    }
    Ok(())
}

/// How long ago process `pid` started (its start time in /proc is in clock ticks since boot).
fn age_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // Field 22 of stat; `rest` starts at field 3.
    let start_ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_BOOTTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    Some(now.saturating_sub(start_ticks * 1_000_000_000 / hz))
}

/// A snapshot cut down to the threads of one process. The handoff state is one per run in the
/// kernel (one last dropper, one `locked` address): only handoffs within the process are kept,
/// and its distributions, which mix processes, are dropped. TODO(fleets): per-process handoffs.
fn only(snap: &Snapshot, pid: u32, owners: &HashMap<u32, u32>) -> Snapshot {
    let mut s = snap.clone();
    let own = |tid: &u32| owners.get(tid) == Some(&pid);
    s.threads.retain(|tid, _| own(tid));
    s.tstates.retain(|tid, _| own(tid));
    s.handoffs.threads.retain(|tid, _| own(tid));
    s.handoffs
        .pairs
        .retain(|(from, to), _| own(from) && own(to));
    s.handoffs.forced_latency = Default::default();
    s.handoffs.offcpu_blocked = Default::default();
    s.handoffs.offcpu_runnable = Default::default();
    s
}

impl Fleet {
    /// Probes one more process; `first`: its plan is attached already (the object was loaded
    /// with it).
    fn join(
        &mut self,
        process: Process,
        planned: Planned,
        parent: Option<u32>,
        first: bool,
    ) -> anyhow::Result<()> {
        let Planned {
            interpreter,
            plan,
            libc,
        } = planned;
        if !first {
            self.attached.add_process(&plan, process.pid)?;
        }
        let wants = plan.needs_gil_address() || plan.wants_gil_address();
        let mut gil_location = None;
        if wants || interpreter.free_threaded {
            match address::find(&process, &interpreter) {
                Ok(gil) if gil.enabled == Some(false) => {
                    self.attached.remove_process(process.pid)?;
                    anyhow::bail!(
                        "free-threaded CPython with the GIL disabled: no GIL to wait for"
                    );
                }
                Ok(gil) => {
                    if wants {
                        self.attached.set_gil_address_of(process.pid, &gil)?;
                    }
                    gil_location = Some(gil.how);
                }
                Err(_) if !plan.needs_gil_address() && !interpreter.free_threaded => {}
                Err(e) => {
                    self.attached.remove_process(process.pid)?;
                    return Err(e);
                }
            }
        }
        let info = InterpreterInfo::of(&interpreter, &plan, gil_location);
        let names = ThreadNames::new(
            process.clone(),
            interpreter.version.minor_version(),
            interpreter.runtime_address_of("_PyRuntime"),
        );
        let from = if self.start_ns == 0 {
            Snapshot::default()
        } else {
            let snap = self.snapshot(true)?;
            only(&snap, process.pid, &self.owners)
        };
        let joined_after_ns = if self.start_ns == 0 {
            0
        } else {
            eprintln!(
                "gilwatch: observing PID {} ({}){}",
                process.pid,
                process.comm(),
                parent
                    .map(|p| format!(", child of {p}"))
                    .unwrap_or_default()
            );
            from.at_ns.saturating_sub(self.start_ns)
        };
        let process_pid = process.pid;
        self.members.push(Member {
            comm: process.comm(),
            exe: select::exe_of(process.pid),
            process,
            parent,
            info,
            names,
            from,
            joined_after_ns,
            picked_up_after_ns: (self.start_ns != 0).then(|| age_ns(process_pid)).flatten(),
            last: None,
            _files: std::iter::once(interpreter.file)
                .chain(libc.map(|l| l.file))
                .map(|f| f.into_handle())
                .collect(),
        });
        Ok(())
    }

    fn live(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.last.is_none())
    }

    /// Whether processes can still join: `--name` and `--all` grow with the host; `--children`
    /// while a process named by `-p` lives (it can still start workers).
    fn can_grow(&self) -> bool {
        let root_alive = || {
            self.selection
                .pids
                .iter()
                .any(|&pid| Process { pid }.is_alive())
        };
        self.selection.name.is_some()
            || self.selection.all
            || (self.selection.children && root_alive())
    }

    async fn watch(
        &mut self,
        duration: Option<Duration>,
        live: Option<Duration>,
        live_to_stderr: bool,
    ) -> anyhow::Result<FleetReport> {
        stop::block()?;
        // No single target to watch for exit: gilwatch's own pidfd never fires.
        let me = PidFd::open(std::process::id()).context("pidfd_open on gilwatch itself")?;
        let mut watcher = Watcher::start(me)?;
        let start = Instant::now();
        self.learn_owners();
        self.start_ns = collect::monotonic_ns();
        let mut first = self.snapshot(true)?;
        self.start_ns = first.at_ns;
        first.probed_ns = 0;
        for m in &mut self.members {
            m.from = only(&first, m.process.pid, &self.owners);
            m.from.at_ns = first.at_ns;
        }
        self.duty = self
            .max_overhead
            .map(|max| DutyCycle::new(max, first.at_ns));
        let mut judged = (first.at_ns, first.hits);
        let far = start + Duration::from_secs(100 * 365 * 24 * 3600);
        let deadline = duration.map_or(far, |d| start + d);
        let mut scan = tokio::time::interval(SCAN_EVERY);
        scan.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_live = start + live.unwrap_or(Duration::from_secs(2));
        let mut names = tokio::time::interval(NAMES_EVERY);
        names.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let ended = loop {
            let judge_at = self.duty.as_ref().map_or(far, |d| {
                Instant::now()
                    + Duration::from_nanos(d.next_ns().saturating_sub(collect::monotonic_ns()))
            });
            tokio::select! {
                event = watcher.next() => match event {
                    Some(Event::Signal { signo, .. }) => {
                        break if signo == libc::SIGINT {
                            EndReason::Interrupted
                        } else {
                            EndReason::Terminated
                        };
                    }
                    Some(Event::TargetExited) => {}
                    None => anyhow::bail!("the signal watcher stopped"),
                },
                _ = sleep_until(deadline) => break EndReason::Duration,
                _ = sleep_until(judge_at), if self.duty.is_some() => {
                    judged = self.judge(judged)?;
                }
                _ = names.tick() => self.learn_names(),
                _ = sleep_until(next_live), if live.is_some() => {
                    next_live = Instant::now() + live.unwrap_or(Duration::from_secs(2));
                    let snap = self.snapshot(true)?;
                    let text = report::summary(&self.report(EndReason::Running, &snap));
                    if live_to_stderr {
                        eprint!("{text}");
                    } else {
                        print!("{text}");
                        std::io::stdout().flush().ok();
                    }
                }
                _ = scan.tick() => {
                    self.reap()?;
                    if self.can_grow() {
                        self.grow();
                    }
                    if self.live().next().is_none() && !self.can_grow() {
                        break EndReason::TargetExited;
                    }
                }
            }
        };
        drop(watcher);
        self.learn_names();
        self.learn_owners();
        let last = self.snapshot(true)?;
        Ok(self.report(ended, &last))
    }

    /// Kernel numbers now, with how long the probes were attached.
    fn snapshot(&self, include_open: bool) -> anyhow::Result<Snapshot> {
        let mut snap =
            collect::snapshot(&self.attached, include_open && self.attached.is_attached())?;
        snap.probed_ns = match &self.duty {
            Some(d) => d.probed_ns(snap.at_ns),
            None => snap.at_ns.saturating_sub(self.start_ns),
        };
        snap.sampled = self.duty.as_ref().is_some_and(|d| d.sampled);
        Ok(snap)
    }

    fn learn_owners(&mut self) {
        if let Ok(map) = self.attached.thread_processes() {
            self.owners.extend(map);
        }
    }

    fn learn_names(&mut self) {
        self.learn_owners();
        let Ok(states) = collect::thread_states(&self.attached) else {
            return;
        };
        for m in self.members.iter_mut().filter(|m| m.last.is_none()) {
            let pid = m.process.pid;
            let tstates: HashMap<u32, u64> = states
                .iter()
                .filter(|(tid, _)| self.owners.get(tid) == Some(&pid))
                .map(|(t, s)| (*t, s.tstate))
                .collect();
            m.names.refresh(&tstates);
        }
        let _ = self.attached.forget_exited_threads();
    }

    /// Processes that exited: their probes go, their numbers stay, as they were at the end.
    fn reap(&mut self) -> anyhow::Result<()> {
        let gone: Vec<u32> = self
            .live()
            .filter(|m| !m.process.is_alive())
            .map(|m| m.process.pid)
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        self.learn_owners();
        for &pid in &gone {
            self.attached.remove_process(pid)?;
        }
        // Their threads' open spans ended at an unknown moment: not counted.
        let _ = self.attached.forget_exited_threads();
        let snap = self.snapshot(false)?;
        for m in self
            .members
            .iter_mut()
            .filter(|m| gone.contains(&m.process.pid))
        {
            eprintln!("gilwatch: PID {} ({}) exited", m.process.pid, m.comm);
            m.last = Some(only(&snap, m.process.pid, &self.owners));
        }
        Ok(())
    }

    /// Processes that joined the selection since the last scan (new workers, recycled ones).
    fn grow(&mut self) {
        let host = select::scan();
        let chosen = self.selection.resolve(&host);
        // Members that exited stay known: a zombie or a recycled PID is not a new process worth
        // the confusion of two entries under one PID.
        let known: HashSet<u32> = self.members.iter().map(|m| m.process.pid).collect();
        let mut new: Vec<u32> = chosen
            .keys()
            .copied()
            .filter(|p| !known.contains(p))
            .filter(|p| {
                // Ignored before: looked at again only once it runs another executable.
                self.ignored
                    .get(p)
                    .is_none_or(|exe| *exe != select::exe_of(*p))
            })
            .filter(|p| !self.skipped.iter().any(|s| s.pid == *p))
            .collect();
        new.sort();
        for pid in new {
            match plan_for(pid, self.strategy, false) {
                Ok(p) => {
                    let parent = observed_parent(&host, pid, &chosen);
                    if let Err(e) = self.join(Process { pid }, p, parent, false) {
                        if (Process { pid }).is_alive() && exit_code_of(&e) != Exit::Ok {
                            eprintln!("gilwatch: not observing PID {pid}: {e:#}");
                            self.skipped.push(Skipped {
                                pid,
                                comm: Process { pid }.comm(),
                                why: format!("{e:#}"),
                            });
                        }
                    }
                }
                Err(_) => {
                    self.ignored.insert(pid, select::exe_of(pid));
                }
            }
        }
    }

    /// One duty-cycle judgement over all processes' traps (the budget is for their sum).
    fn judge(&mut self, last: (u64, Hits)) -> anyhow::Result<(u64, Hits)> {
        let Some(d) = self.duty.as_mut() else {
            return Ok(last);
        };
        let now = collect::monotonic_ns();
        let hits = self.attached.hits()?;
        let secs = now.saturating_sub(last.0).max(1) as f64 / 1e9;
        let cost = self.attached.costs.cost_pct(&hits.since(&last.1), secs);
        match d.next(now, cost) {
            Switch::Attach => self.attached.attach_all()?,
            Switch::Detach => self.attached.detach_all()?,
            Switch::Stay => return Ok((now, hits)),
        }
        let end = collect::monotonic_ns();
        if let Some(d) = self.duty.as_mut() {
            d.switched(end, end.saturating_sub(now));
        }
        Ok((end, self.attached.hits()?))
    }

    fn report(&self, ended: EndReason, last: &Snapshot) -> FleetReport {
        let observed: HashSet<u32> = self.members.iter().map(|m| m.process.pid).collect();
        let has_children: HashSet<u32> = self.members.iter().filter_map(|m| m.parent).collect();
        let mut entries = Vec::new();
        for m in &self.members {
            let pid = m.process.pid;
            let to = m
                .last
                .clone()
                .unwrap_or_else(|| only(last, pid, &self.owners));
            let info = RunInfo {
                pid,
                ns_pid: m.process.namespace_pid(),
                command: None,
                exit_code: None,
                interpreter: m.info.clone(),
                max_overhead_pct: self.max_overhead,
                trap_costs: self.trap_costs,
                // Forced drops need the GIL's `locked` address, one per run in the kernel.
                handoff: crate::report::handoff::HandoffCaps {
                    forced_known: false,
                    offcpu: false,
                },
            };
            let names = |tid| m.names.get(tid);
            let why = if m.last.is_some() {
                EndReason::TargetExited
            } else {
                ended
            };
            let report = crate::report::build(&info, "final", why, &m.from, &to, &names);
            let parent_exe = m
                .parent
                .and_then(|p| self.members.iter().find(|o| o.process.pid == p))
                .map(|o| o.exe.as_str());
            let role = if has_children.contains(&pid) {
                Role::Master
            } else if m.parent.is_some_and(|p| observed.contains(&p)) {
                if parent_exe == Some(m.exe.as_str()) {
                    Role::Worker
                } else {
                    Role::Child
                }
            } else {
                Role::Process
            };
            entries.push(ProcessEntry {
                role,
                comm: m.comm.clone(),
                parent: m.parent,
                exited: m.last.is_some(),
                joined_after_ns: m.joined_after_ns,
                // Only for processes that started after the run did (not old ones found late).
                picked_up_after_ns: m.picked_up_after_ns.filter(|&ns| ns <= m.joined_after_ns),
                report,
            });
        }
        let duration_ns = last.at_ns.saturating_sub(self.start_ns).max(1);
        let mut r = FleetReport::new(selection_text(&self.selection), duration_ns, ended, entries);
        r.skipped = self.skipped.clone();
        r.ignored_non_python = self.ignored.len();
        let probed_s = last.probed_ns.max(1) as f64 / 1e9;
        r.probe_cost_pct =
            crate::report::format::round2(self.trap_costs.cost_pct(&last.hits, probed_s));
        r.sampled = last.sampled;
        r.lost_events = last.lost_events;
        r.kernel_memory_bytes = last.kernel_memory_bytes;
        r
    }
}
