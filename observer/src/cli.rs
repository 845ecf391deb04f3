//! Command line.
use std::{path::PathBuf, time::Duration};

use clap::Parser;

use crate::{gil::plan::Strategy, lock::spec::LockRequest};

/// Exact per-thread GIL wait and hold times of a live CPython process, from eBPF uprobes.
///
/// gilwatch attaches to a running interpreter (or starts one), probes the GIL's take and drop
/// functions from the kernel, and reports for every thread how long it waited for the GIL and how
/// long it held it: totals, percentiles and histograms. Every acquisition is measured, unless that
/// would cost more than --max-overhead: then the probes are attached in windows and the report says
/// SAMPLED. The target is not restarted or modified, and the probes go away when gilwatch exits.
#[derive(Debug, Parser)]
#[command(
    name = "gilwatch",
    version,
    after_help = "EXAMPLES:
  sudo gilwatch -p 4242                      watch until Ctrl-C, live table every 2 s
  sudo gilwatch -p 4242 -d 10s --json -      10-second snapshot as JSON on stdout (for runbooks)
  sudo gilwatch -d 30s -i 5s --json out.jsonl -p 4242
                                             one JSON line per 5 s, then the final object
  sudo gilwatch -- python3 app.py --port 80  start a program and watch it from its first bytecode
  sudo gilwatch --max-overhead 1 -p 4242     keep the probes' cost under 1% of a CPU (sampling if needed)
  sudo gilwatch top -p 4242                  live full-screen view: threads by wait or hold, sparklines
  sudo gilwatch -p 4242 -d 5s --trace gil.pftrace
                                             a timeline of every GIL wait and hold (ui.perfetto.dev)
  sudo gilwatch doctor -p 4242               show the probe plan (interpreter, symbols, GIL, strategy)
  sudo gilwatch -p 4242 -d 10s --json after.json --fail-if 'wait_pct > 50'
                                             a runbook step: exit 7 when summed wait is over 50%
  sudo gilwatch -p 4242 -q --prometheus 9464 metrics for Prometheus at http://127.0.0.1:9464/metrics
  gilwatch diff before.json after.json       what changed between two snapshots, with a verdict
  sudo gilwatch -p 4242 -d 30s --html gil.html
                                             the report as a page to open in a browser or share
  sudo gilwatch -p 4242 --children -d 30s   a gunicorn master and all its workers (also new ones)
  sudo gilwatch -p 11,12 -d 10s              two processes, one section each and a summary
  sudo gilwatch --name celery -d 10s -q      every CPython process named celery
  sudo gilwatch --all -d 5s -q --json -      every CPython process on the host
  sudo gilwatch -p 4242 --mutexes -d 10s     which pthread mutexes do its threads wait for?
  sudo gilwatch -p 4242 --lock libfoo.so:g_cache_lock --lock 0x7f3a2c001040
                                             wait/hold per thread of named mutexes (any process)
  sudo gilwatch -p 4242 --lock-fns my_lock:my_unlock
                                             locks behind your own acquire/release functions
  sudo gilwatch -p 4242 --py-locks -d 10s    which threading.Lock/RLock/Queue do its threads wait for?

READING THE REPORT:
  WAIT  time from asking for the GIL (take_gil) to getting it; HOLD  time from getting it to
  releasing it (drop_gil). %wall is that time over the observed wall time: holds of all threads
  add up to at most 100%; waits can add up to more (three threads always waiting = 300%).
  Handoffs: FORCED drops were asked for by a waiter whose wait ran out (the switch interval),
  VOLUNTARY ones were not (I/O, sleep, C code releasing the GIL); `who took it from whom` counts
  acquisitions per (previous holder → next holder). With --offcpu: GIL held while its holder was
  switched out, blocked (asleep in the kernel) or runnable (preempted).

EXIT CODES:
  0 ok · 1 internal error · 2 bad usage (also: unknown lock symbol, not a mutex, unmapped address)
  3 no such process · 4 not a supported CPython (without --lock/--lock-fns/--mutexes)
  5 missing privileges (run as root) · 6 kernel lacks uprobe support
  7 a --fail-if condition held (the report is written first)
  With -- CMD: the command's own exit code (128+N if it was killed by signal N); 130 or 143
  when SIGINT or SIGTERM ended gilwatch and the command was still running 3 s later."
)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub sub: Option<Sub>,

    /// How to find the GIL: `symtab` probes take_gil/drop_gil (needs a symbol table), `exports`
    /// finds take_gil by disassembly in builds with no symbols (Debian's, Ubuntu's python3.x),
    /// `libc` probes libc's pthread calls on the GIL (any 3.8+ build), `auto` takes the first of
    /// these that works here (`gilwatch doctor` says which and why).
    #[arg(long, value_enum, default_value = "auto")]
    pub strategy: Strategy,

    /// Process to observe (its PID, as shown by ps or pgrep). Repeat (-p 1 -p 2) or separate by
    /// commas (-p 1,2) to observe several processes in one run: one section each, a summary per
    /// role, one JSON entry each.
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        value_delimiter = ',',
        conflicts_with = "command",
        required_unless_present_any = ["command", "name", "all"]
    )]
    pub pids: Vec<u32>,

    /// Also observe every descendant of the selected process(es) that runs CPython (the workers
    /// of gunicorn, uWSGI, Celery prefork, multiprocessing), including workers started or
    /// replaced during the run (picked up within half a second). Other descendants are ignored.
    #[arg(long, conflicts_with = "command")]
    pub children: bool,

    /// Observe the CPython processes named NAME: their command name (comm, as in `ps -o comm`)
    /// or the file name of their program or script (`gunicorn` for `python3 /venv/bin/gunicorn`).
    #[arg(long, value_name = "NAME", conflicts_with = "command")]
    pub name: Option<String>,

    /// Observe every CPython process on the host (gilwatch itself excluded).
    #[arg(long, conflicts_with_all = ["command", "name"])]
    pub all: bool,

    /// Stop after this long (e.g. 10s, 500ms, 2m). Default: until Ctrl-C or the target exits.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Print a live per-thread table this often (0 turns it off). With --json, given explicitly,
    /// also writes one JSON line per interval.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Write the report as JSON to PATH, or to stdout with `-` (the human report then goes to stderr).
    #[arg(long, value_name = "PATH|-")]
    pub json: Option<PathBuf>,

    /// Overhead budget, in % of one CPU: gilwatch estimates what its probes cost the target
    /// (probe traps per second × the measured cost of a trap) and, over budget, attaches them in
    /// windows only; the report then says `sampled` and the share of time observed. `none`:
    /// observe all the time, whatever it costs. The default, 5, observes a service at 10^4 GIL
    /// cycles/s (≈2.3% with two traps per cycle) all the time, and one at 10^5 about a fifth of it.
    #[arg(long, value_name = "PCT|none", default_value = "5", value_parser = crate::probe::budget::parse_max_overhead)]
    pub max_overhead: crate::probe::budget::MaxOverhead,

    /// Also write the final report as one self-contained HTML page to FILE: the summary and
    /// verdict, the per-thread table, wait/hold shares and histograms as charts, the lock tables.
    /// It loads nothing from the network (inline CSS and SVG, no scripts): mail it, attach it.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write a timeline of every GIL wait and hold to FILE, for Perfetto (open it in
    /// https://ui.perfetto.dev): one track per thread, named with its Python name, with `GIL
    /// wait` and `GIL hold` slices, and a `GIL` track showing who holds it. It covers the
    /// report's window, and its slices add up to the report's totals. Costs one ring buffer
    /// record per GIL span (counted in the overhead estimate) and 32 bytes of gilwatch's memory
    /// per span until the end; records lost to a full buffer are reported.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// No live tables, only the final report.
    #[arg(short, long)]
    pub quiet: bool,

    /// Colours in the human report: `auto` on a terminal unless NO_COLOR is set, `always`,
    /// `never`. On a terminal, tables also fit its width (narrow ones drop the p50/p99 columns
    /// first); a pipe or a file always gets the plain, full-width text.
    #[arg(long, value_name = "WHEN", value_enum, default_value = "auto")]
    pub color: crate::report::canvas::ColorWhen,

    /// Watch a pthread mutex: a global's data symbol (g_cache_lock, or libfoo.so:g_cache_lock to
    /// pick the object) or a raw address (0x7f…). Repeat for several locks; each is reported
    /// separately. Works on any process (C, C++, Rust, Python with its GIL report).
    #[arg(long = "lock", value_name = "SYMBOL|OBJ:SYMBOL|0xADDR", value_parser = crate::lock::spec::parse_lock, requires = "pids")]
    pub locks: Vec<crate::lock::spec::LockSpec>,

    /// Watch locks taken through your own functions: every call of ACQUIRE to its return is a
    /// wait, from there to RELEASE a hold; argument ARG (0 = first, the default) identifies the
    /// lock instance. OBJ@FUNCTION picks the object. Repeatable.
    #[arg(long = "lock-fns", value_name = "ACQUIRE:RELEASE[:ARG]", value_parser = crate::lock::spec::parse_lock_fns, requires = "pids")]
    pub lock_fns: Vec<crate::lock::spec::LockFnSpec>,

    /// Discover every pthread mutex the process contends on, ranked by total wait, with its data
    /// symbol and the call sites that waited most.
    #[arg(long, requires = "pids")]
    pub mutexes: bool,

    /// Wait and hold per Python lock object and thread: threading.Lock and RLock, and what is
    /// built on them (Condition, Semaphore, Event, queue.Queue), next to the GIL report. A wait
    /// runs from acquire() to having the lock, a hold from there to release(). CPython 3.6–3.12
    /// (their locks are semaphores, probed in libc: any build, stripped or not); 3.13+ take
    /// threading.Lock inline (PyMutex) and are refused. See docs/locks.md.
    #[arg(long = "py-locks", requires = "pids")]
    pub py_locks: bool,

    /// Fail the run (exit 7, after the report) when a condition holds for the whole process:
    /// `METRIC OP VALUE` with METRIC one of held_pct, wait_pct (summed over threads), p50_wait,
    /// p99_wait, max_wait (with a unit: 10ms, 500us), acquisitions_per_sec, and OP one of >, >=,
    /// <, <=. Repeatable: any one holding fails the run. E.g. --fail-if 'p99_wait > 10ms'.
    #[arg(long = "fail-if", value_name = "CONDITION", value_parser = crate::runbook::condition::parse)]
    pub fail_if: Vec<crate::runbook::condition::Condition>,

    /// Serve cumulative GIL metrics for Prometheus at http://ADDR/metrics while watching (until
    /// Ctrl-C or -d): held and waited seconds, acquisitions, wait and hold histograms, per thread
    /// (pools collapsed: ThreadPoolExecutor-0_*) with a pid label. ADDR: a port (loopback) or
    /// IP:PORT. Combine with -q to keep the terminal quiet.
    #[arg(long, value_name = "[IP:]PORT", value_parser = crate::exporter::address::parse, conflicts_with = "command")]
    pub prometheus: Option<std::net::SocketAddr>,

    /// Let --prometheus listen on an address other than loopback (the endpoint has no
    /// authentication; it names the process's threads).
    #[arg(long, requires = "prometheus")]
    pub prometheus_public: bool,
    /// Blame lists the Python stacks that held the GIL while another thread's wait for it
    /// expired (and the stacks that waited), with their share of all hold time. Only stacks
    /// with a hold (or wait) at least this long are listed. Default: the GIL's switch interval
    /// (5ms unless the program changed it), which is what a waiter's expired wait means.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub blame_min: Option<Duration>,

    /// No blame: no frame walks on expired GIL waits and no blame maps in the kernel.
    #[arg(long, conflicts_with = "blame_min")]
    pub no_blame: bool,
    /// Also measure GIL held off-CPU: the holder switched out by the kernel (a blocking call or
    /// sleep in C code that kept the GIL, a page fault, CPU starvation), split into blocked and
    /// runnable-but-preempted, per thread. It costs every process on the host: a tracepoint on
    /// each context switch, about 0.2 µs (measured: 1.25 → 1.46 µs per switch, pipe ping-pong),
    /// which the overhead budget does not count; hence off by default.
    #[arg(long)]
    pub offcpu: bool,

    /// Command to start and observe from its first bytecode (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,

    /// Set by `gilwatch top`: the interval reports go to the full-screen view.
    #[arg(skip)]
    pub top: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Print the probe plan for a process and exit, attaching nothing: which file holds the
    /// interpreter, its version and build-id, where the symbols come from, where the GIL is,
    /// which strategy would run and what it cannot see.
    Doctor {
        /// Process to examine.
        #[arg(short, long, value_name = "PID")]
        pid: u32,
        /// Strategy to plan for (as for watching).
        #[arg(long, value_enum, default_value = "auto")]
        strategy: Strategy,
    },
    /// Compare two reports written by `gilwatch --json FILE` (the final GIL report of each):
    /// held %, summed wait %, p99 wait and acquisitions per second for the whole process and per
    /// thread (pools such as ThreadPoolExecutor-0_7 are matched as ThreadPoolExecutor-0_*), and a
    /// one-line verdict. Needs no privileges.
    #[command(after_help = "EXAMPLES:
  sudo gilwatch -p 4242 -d 10s -q --json before.json
  (deploy, change a setting, add load…)
  sudo gilwatch -p 4242 -d 10s -q --json after.json
  gilwatch diff before.json after.json --fail-if 'wait_pct > 50' --fail-if 'p99_wait > 10ms'

EXIT CODES:
  0 ok · 2 unreadable file or not a gilwatch report · 7 a --fail-if condition held on AFTER")]
    Diff {
        /// The earlier report.
        before: PathBuf,
        /// The later report (what --fail-if judges).
        after: PathBuf,
        /// Write the comparison as JSON to PATH, or to stdout with `-` (the table then goes to stderr).
        #[arg(long, value_name = "PATH|-")]
        json: Option<PathBuf>,
        /// Exit 7 when a condition holds for AFTER's whole process (as for a run; repeatable).
        #[arg(long = "fail-if", value_name = "CONDITION", value_parser = crate::runbook::condition::parse)]
        fail_if: Vec<crate::runbook::condition::Condition>,
    },
    /// A live full-screen view of a process's threads, refreshed every interval: each thread's
    /// share of the interval waiting for and holding the GIL, acquisitions per second, a
    /// sparkline of its waits, and the current verdict.
    ///
    /// Keys: w sort by wait · h sort by hold · / filter by name (Enter applies, Esc clears) ·
    /// space pause · q (or Ctrl-C) quit. Quitting removes the probes and prints the report of
    /// the whole run.
    Top {
        /// Process to watch.
        #[arg(short, long, value_name = "PID")]
        pid: u32,
        /// Refresh this often (each screen shows the numbers of the last interval).
        #[arg(short, long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Stop after this long (default: until q, Ctrl-C or the target exits).
        #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// How to find the GIL, as for `gilwatch -p` (`gilwatch doctor` says which works here).
        #[arg(long, value_enum, default_value = "auto")]
        strategy: Strategy,
        /// Overhead budget in % of one CPU, as for `gilwatch -p`: past it the probes are
        /// attached in windows and the screen says SAMPLED.
        #[arg(long, value_name = "PCT|none", default_value = "5", value_parser = crate::probe::budget::parse_max_overhead)]
        max_overhead: crate::probe::budget::MaxOverhead,
    },
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10s, 500ms, 2m)"))
}

impl Cli {
    /// The lock options, or None when there are none.
    pub fn lock_request(&self) -> Option<LockRequest> {
        let asked =
            !self.locks.is_empty() || !self.lock_fns.is_empty() || self.mutexes || self.py_locks;
        asked.then(|| LockRequest {
            locks: self.locks.clone(),
            lock_fns: self.lock_fns.clone(),
            discover: self.mutexes,
            python: self.py_locks,
        })
    }

    /// The one process of a single-process run (`-p PID`, nothing that selects more), else None.
    pub fn pid(&self) -> Option<u32> {
        match self.pids.as_slice() {
            [pid] if !self.is_fleet() => Some(*pid),
            _ => None,
        }
    }

    /// Several processes in one run: more than one PID, or a selection that can grow.
    pub fn is_fleet(&self) -> bool {
        self.pids.len() > 1 || self.children || self.name.is_some() || self.all
    }

    pub fn json_to_stdout(&self) -> bool {
        self.json.as_deref().is_some_and(|p| p.as_os_str() == "-")
    }
}
