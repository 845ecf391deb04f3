//! The run: wait for the end (duration, Ctrl-C, SIGTERM, target exit), printing live tables and
//! JSON lines on the way, then build the final report.
//!
//! With `-- CMD`, SIGINT/SIGTERM sent to gilwatch are passed on to the command (Ctrl-C in a
//! terminal reaches it directly), and the run ends when the command exits, or CHILD_GRACE
//! later, or at a second signal; the report is written in every case.
use std::{io::Write, time::Duration};

use anyhow::Context as _;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, sleep_until};

use crate::{
    collect::{self, Snapshot},
    gil::locate::Interpreter,
    names::ThreadNames,
    probe::{
        attach::Attached,
        budget::{DutyCycle, Switch},
        cost::Hits,
        cpu_time::{Baseline, CpuTime},
    },
    report::{self, EndReason, Report, RunInfo, canvas::Canvas, json, terminal},
    stop::{self, Event, Watcher},
    target::{launch::GatedChild, pidfd::PidFd, process::Process},
};

/// How often new threads' names (and, while it is unknown, the GIL's address) are looked for.
const POLL: Duration = Duration::from_millis(100);
const FAST_POLL: Duration = Duration::from_millis(1);
/// How often new threads are looked for to name them once there are many: reading the kernel's
/// thread table is one syscall per thread, which at every POLL and 1000 threads cost gilwatch 7%
/// of a CPU (bench). Few threads are looked at every POLL, so short-lived ones get their names.
const NAMES_EVERY: Duration = Duration::from_secs(1);
const MANY_THREADS: usize = 64;
/// The pace at which a thread that just appeared is looked at until it has its Python name (a
/// thread living a few hundred milliseconds must be named before it ends).
const NAMES_FAST: Duration = Duration::from_millis(10);
/// `-- CMD` after a stop signal: how long the command has to exit before gilwatch reports
/// without its exit code (a second signal ends the wait at once).
const CHILD_GRACE: Duration = Duration::from_secs(3);
/// `--prometheus`: how often the kernel's numbers are folded into the exported totals (what a
/// scrape sees is at most this old).
const EXPORT_EVERY: Duration = Duration::from_millis(500);

pub struct Outputs {
    pub human: Box<dyn Write>,
    pub json: Option<Box<dyn Write>>,
    /// Live tables (and JSON lines, if `json_intervals`) every this often.
    pub interval: Option<Duration>,
    pub json_intervals: bool,
    /// Print the live table each interval.
    pub live: bool,
    /// Colours and width of `human`.
    pub canvas: Canvas,
    /// `gilwatch top`: the interval reports go to this full-screen view instead.
    pub top: Option<crate::top::Top>,
}

pub struct Session<'a> {
    pub attached: &'a mut Attached,
    pub process: Process,
    pub child: Option<GatedChild>,
    pub interpreter: &'a mut Interpreter,
    pub names: ThreadNames,
    pub info: RunInfo<'a>,
    pub duration: Option<Duration>,
    /// `-- CMD` with the libc strategy: the GIL's address is written to the kernel once the
    /// interpreter has created it.
    pub gil_pending: bool,
    /// `--max-overhead`: duty-cycle the probes past this cost (% of one CPU).
    pub max_overhead: Option<f64>,
    /// The target's system share of CPU time before the probes were attached.
    pub cpu_baseline: Option<Baseline>,
    /// `--prometheus`: the totals a scrape is served from.
    pub exporter: Option<&'a crate::exporter::server::Exporter>,
    /// Which code holds and waits (blame/mod.rs).
    pub blame: crate::blame::Blame,
}

/// A timer that, once late, keeps its period from the late tick rather than bursting.
fn delayed(mut timer: Interval) -> Interval {
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

impl Session<'_> {
    pub async fn run(mut self, mut out: Outputs) -> anyhow::Result<Report> {
        // `-- CMD` blocked the stop signals before forking; a PID target blocks them now.
        if self.child.is_none() {
            stop::block()?;
        }
        let target = match &self.child {
            Some(c) => c.pidfd.try_clone(),
            None => PidFd::open(self.process.pid),
        }
        .with_context(|| format!("pidfd_open on PID {}", self.process.pid))?;
        let mut watcher = Watcher::start(target)?;
        let start = Instant::now();
        // The baseline is the kernel's own counts now, not zero: the probes have been recording
        // since attach (finding the GIL and naming threads came in between), and everything
        // before the window's start must stay out of it. A command is released only after it,
        // so nothing it does falls before the window however late this thread gets the CPU.
        let first = collect::snapshot(self.attached, true)?;
        if let Some(c) = self.child.as_mut() {
            c.release()?;
        }
        let cpu_start = CpuTime::read(self.process.pid).ok();
        let start_ns = first.at_ns;
        let mut duty = self.max_overhead.map(|max| DutyCycle::new(max, start_ns));
        // Trap counters at the duty cycle's last judgement.
        let mut judged = (start_ns, first.hits);
        let deadline = self.duration.map(|d| start + d);
        let far = start + Duration::from_secs(100 * 365 * 24 * 3600);
        // Poll fast while the GIL's address is still unknown: every millisecond before it is
        // found is GIL traffic not seen.
        let first_poll = if self.gil_pending { FAST_POLL } else { POLL };
        let mut poll = delayed(tokio::time::interval(first_poll));
        let every = out.interval.filter(|d| !d.is_zero());
        let mut tick = delayed(interval_at(
            start + every.unwrap_or(Duration::from_secs(3600)),
            every.unwrap_or(Duration::from_secs(3600)),
        ));
        let mut names_fast = delayed(tokio::time::interval(NAMES_FAST));
        let mut export = delayed(tokio::time::interval(EXPORT_EVERY));
        let mut previous = first.clone();
        let mut last_names = start;
        let mut known_threads = 0;
        // `-- CMD` after a stop signal: (why, until when to wait for the command to exit).
        let mut stopping: Option<(EndReason, Instant)> = None;
        let mut target_gone = false;

        let ended = loop {
            tokio::select! {
                event = watcher.next() => match event {
                    Some(Event::Signal { signo, from_terminal }) => {
                        if let Some(why) = self.on_signal(signo, from_terminal, &mut stopping) {
                            break why;
                        }
                    }
                    Some(Event::TargetExited) => {
                        target_gone = true;
                        break stopping.map_or(EndReason::TargetExited, |(why, _)| why);
                    }
                    None => anyhow::bail!("the signal and exit watcher stopped"),
                },
                _ = sleep_until(stopping.map_or(far, |(_, until)| until)), if stopping.is_some() => {
                    break stopping.map_or(EndReason::Interrupted, |(why, _)| why);
                }
                _ = sleep_until(deadline.unwrap_or(far)) => break EndReason::Duration,
                _ = poll.tick() => {
                    if self.gil_pending {
                        self.try_find_gil();
                        if !self.gil_pending {
                            poll = tokio::time::interval(POLL);
                        }
                    }
                    if known_threads < MANY_THREADS || last_names.elapsed() >= NAMES_EVERY {
                        known_threads = self.learn_names();
                        last_names = Instant::now();
                    }
                }
                _ = names_fast.tick(), if known_threads < MANY_THREADS => {
                    if self.names.wants_fast() {
                        known_threads = self.learn_names();
                        last_names = Instant::now();
                    }
                }
                _ = sleep_until(judgement_due(duty.as_ref(), far)), if duty.is_some() => {
                    if let Some(d) = duty.as_mut() {
                        judged = self.judge(d, judged)?;
                    }
                }
                _ = export.tick(), if self.exporter.is_some() => {
                    self.export(duty.as_ref(), start_ns)?;
                }
                _ = tick.tick(), if every.is_some() => {
                    previous = self.interval(&mut out, duty.as_ref(), &first, &previous)?;
                }
                e = crate::top::next_event(out.top.as_mut()), if out.top.is_some() => {
                    // `q` in `gilwatch top`: the way out Ctrl-C is in a plain run.
                    if let Some(t) = out.top.as_mut() {
                        if t.input(e)? {
                            break EndReason::Quit;
                        }
                    }
                }
            }
        };
        drop(watcher);
        // The screen back before the final report is written to it.
        drop(out.top.take());
        self.finish(
            &mut out,
            ended,
            target_gone,
            duty.as_ref(),
            &first,
            cpu_start,
        )
    }

    /// A stop signal: the reason to end now, or (`-- CMD`, first signal) none while the
    /// command gets its grace period.
    fn on_signal(
        &self,
        signo: i32,
        from_terminal: bool,
        stopping: &mut Option<(EndReason, Instant)>,
    ) -> Option<EndReason> {
        let why = if signo == libc::SIGINT {
            EndReason::Interrupted
        } else {
            EndReason::Terminated
        };
        match (self.child.as_ref(), *stopping) {
            // A second signal: stop waiting for the command.
            (Some(_), Some(_)) | (None, _) => Some(why),
            (Some(child), None) => {
                // Ctrl-C in a terminal reached the command too; a signal sent to gilwatch
                // alone is passed on.
                if !from_terminal {
                    child.pidfd.send_signal(signo).ok();
                }
                *stopping = Some((why, Instant::now() + CHILD_GRACE));
                None
            }
        }
    }

    /// One interval: the live table and JSON line since `previous`; returns the new snapshot.
    fn interval(
        &mut self,
        out: &mut Outputs,
        duty: Option<&DutyCycle>,
        first: &Snapshot,
        previous: &Snapshot,
    ) -> anyhow::Result<Snapshot> {
        let snap = self.snapshot(duty, first.at_ns, true)?;
        let r = self.report("interval", EndReason::Running, previous, &snap);
        if out.live {
            write!(
                out.human,
                "{}",
                terminal::live(&r, snap.at_ns - first.at_ns, &out.canvas)
            )
            .context("writing the live table")?;
            out.human.flush().ok();
        }
        if let Some(t) = out.top.as_mut() {
            t.interval(&r, snap.at_ns - first.at_ns)?;
        }
        if let (true, Some(j)) = (out.json_intervals, out.json.as_mut()) {
            json::write_line(j.as_mut(), &r)?;
        }
        Ok(snap)
    }

    /// The run has ended: last names and numbers, the final report, written.
    fn finish(
        &mut self,
        out: &mut Outputs,
        ended: EndReason,
        target_gone: bool,
        duty: Option<&DutyCycle>,
        first: &Snapshot,
        cpu_start: Option<CpuTime>,
    ) -> anyhow::Result<Report> {
        if !target_gone {
            self.learn_names();
        }
        let last = self.snapshot(duty, first.at_ns, !target_gone)?;
        let cpu_end = (!target_gone)
            .then(|| CpuTime::read(self.process.pid).ok())
            .flatten();
        self.info.exit_code = self.child.as_mut().and_then(GatedChild::try_wait);
        let mut report = self.report("final", ended, first, &last);
        let held: u64 = report.threads.iter().map(|t| t.hold_ns.total).sum();
        let waited: u64 = report.threads.iter().map(|t| t.wait_ns.total).sum();
        let names = |tid| {
            let (os, python) = self.names.get(tid);
            python.unwrap_or(os)
        };
        report.blame = Some(self.blame.report(self.attached, &names, held, waited));
        if let (Some(b), Some(from), Some(to)) = (self.cpu_baseline, cpu_start, cpu_end) {
            report.sampling.measured_overhead_pct = b
                .overhead_pct(&from, &to)
                .map(|p| (p * 100.0).round() / 100.0);
        }
        write!(
            out.human,
            "{}",
            terminal::final_report(&report, &out.canvas)
        )
        .context("writing the report")?;
        out.human.flush().ok();
        if let Some(j) = out.json.as_mut() {
            json::write_line(j.as_mut(), &report)?;
        }
        Ok(report)
    }

    /// One duty-cycle judgement: the estimated cost of the traps since the last one, then the
    /// switch it asks for, timed. Returns the time and trap counters after it.
    fn judge(&mut self, d: &mut DutyCycle, last: (u64, Hits)) -> anyhow::Result<(u64, Hits)> {
        let now = collect::monotonic_ns();
        let hits = self.attached.hits()?;
        let secs = now.saturating_sub(last.0).max(1) as f64 / 1e9;
        let cost = self.attached.costs.cost_pct(&hits.since(&last.1), secs);
        let switch = d.next(now, cost);
        match switch {
            Switch::Attach => self.attached.attach_all()?,
            Switch::Detach => self.attached.detach_all()?,
            Switch::Stay => return Ok((now, hits)),
        }
        let end = collect::monotonic_ns();
        d.switched(end, end.saturating_sub(now));
        Ok((end, self.attached.hits()?))
    }

    /// `--prometheus`: folds the kernel's numbers into the exported totals, then frees the
    /// entries of threads that had exited before they were read (their numbers are final).
    fn export(&mut self, duty: Option<&DutyCycle>, start_ns: u64) -> anyhow::Result<()> {
        let Some(exporter) = self.exporter else {
            return Ok(());
        };
        // Live threads first: one that exits after this list is kept until the next round.
        let live: std::collections::HashSet<u32> = self.process.thread_ids().into_iter().collect();
        let snap = self.snapshot(duty, start_ns, false)?;
        let now = collect::monotonic_ns();
        let open: std::collections::HashMap<u32, (u64, u64)> =
            collect::thread_states(self.attached)?
                .into_iter()
                .map(|(tid, st)| {
                    let (w, h) = collect::open_spans(&st, now);
                    (tid, (w.unwrap_or(0), h.unwrap_or(0)))
                })
                .collect();
        // An unreadable task list (the target is exiting) frees nothing.
        let exited: std::collections::HashSet<u32> = if live.is_empty() {
            Default::default()
        } else {
            snap.threads
                .keys()
                .filter(|t| !live.contains(t))
                .copied()
                .collect()
        };
        let name = |tid| {
            let (os, py) = self.names.get(tid);
            py.unwrap_or(os)
        };
        exporter
            .totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(
                crate::exporter::totals::readings(&snap, &open, &name),
                &exited,
                snap.probed_ns,
                snap.lost_events,
            );
        let exited: Vec<u32> = exited.into_iter().collect();
        self.attached.forget_stats(&exited)
    }

    /// The kernel's numbers now, with how long the probes were attached.
    fn snapshot(
        &self,
        duty: Option<&DutyCycle>,
        start_ns: u64,
        include_open: bool,
    ) -> anyhow::Result<Snapshot> {
        let mut snap =
            collect::snapshot(self.attached, include_open && self.attached.is_attached())?;
        snap.probed_ns = match duty {
            Some(d) => d.probed_ns(snap.at_ns),
            None => snap.at_ns.saturating_sub(start_ns),
        };
        snap.sampled = duty.is_some_and(|d| d.sampled);
        Ok(snap)
    }

    fn try_find_gil(&mut self) {
        if self.interpreter.load_bias.is_none() {
            let Ok(maps) = self.process.maps() else {
                return;
            };
            self.interpreter.refresh_load_bias(&maps);
            // learn_names sets this when it sees the load bias first; here we did.
            self.names
                .set_runtime_addr(self.interpreter.runtime_address_of("_PyRuntime"));
        }
        if self.interpreter.load_bias.is_none() {
            return;
        }
        if let Ok(gil) = crate::gil::address::find(&self.process, self.interpreter) {
            if self.attached.set_gil_address(&gil).is_ok() {
                self.blame.arm(self.attached, self.interpreter, &gil);
                self.info.interpreter.gil_location = Some(gil.how);
                self.gil_pending = false;
            }
        }
    }

    /// Names threads not named yet; returns how many threads the kernel tracks.
    fn learn_names(&mut self) -> usize {
        if !self.names.has_runtime_addr() {
            // `-- CMD`: the interpreter gets mapped only after exec.
            if self.interpreter.load_bias.is_none() {
                if let Ok(maps) = self.process.maps() {
                    self.interpreter.refresh_load_bias(&maps);
                }
            }
            self.names
                .set_runtime_addr(self.interpreter.runtime_address_of("_PyRuntime"));
        }
        let Ok(states) = collect::thread_states(self.attached) else {
            return 0;
        };
        let n = states.len();
        let tstates = states.into_iter().map(|(t, s)| (t, s.tstate)).collect();
        self.names.refresh(&tstates);
        self.blame.note_threads(&tstates);
        // Stacks are symbolized while their code objects are alive (the target may exit).
        self.blame.refresh(self.attached);
        // Named (or given up on) while alive: the state of threads that exited can go.
        let _ = self.attached.forget_exited_threads();
        n
    }

    fn report(
        &self,
        kind: &'static str,
        ended: EndReason,
        from: &Snapshot,
        to: &Snapshot,
    ) -> Report {
        let names = |tid| self.names.get(tid);
        report::build(&self.info, kind, ended, from, to, &names)
    }
}

/// When the duty cycle's next judgement is due, as a timer deadline.
fn judgement_due(duty: Option<&DutyCycle>, far: Instant) -> Instant {
    let Some(d) = duty else { return far };
    let now = collect::monotonic_ns();
    Instant::now() + Duration::from_nanos(d.next_ns().saturating_sub(now))
}
