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
  sudo gilwatch doctor -p 4242               show the probe plan (interpreter, symbols, GIL, strategy)
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

EXIT CODES:
  0 ok · 1 internal error · 2 bad usage (also: unknown lock symbol, not a mutex, unmapped address)
  3 no such process · 4 not a supported CPython (without --lock/--lock-fns/--mutexes)
  5 missing privileges (run as root) · 6 kernel lacks uprobe support
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

    /// Process to observe (its PID, as shown by ps or pgrep).
    #[arg(
        short,
        long,
        value_name = "PID",
        conflicts_with = "command",
        required_unless_present = "command"
    )]
    pub pid: Option<u32>,

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

    /// No live tables, only the final report.
    #[arg(short, long)]
    pub quiet: bool,

    /// Watch a pthread mutex: a global's data symbol (g_cache_lock, or libfoo.so:g_cache_lock to
    /// pick the object) or a raw address (0x7f…). Repeat for several locks; each is reported
    /// separately. Works on any process (C, C++, Rust, Python with its GIL report).
    #[arg(long = "lock", value_name = "SYMBOL|OBJ:SYMBOL|0xADDR", value_parser = crate::lock::spec::parse_lock, requires = "pid")]
    pub locks: Vec<crate::lock::spec::LockSpec>,

    /// Watch locks taken through your own functions: every call of ACQUIRE to its return is a
    /// wait, from there to RELEASE a hold; argument ARG (0 = first, the default) identifies the
    /// lock instance. OBJ@FUNCTION picks the object. Repeatable.
    #[arg(long = "lock-fns", value_name = "ACQUIRE:RELEASE[:ARG]", value_parser = crate::lock::spec::parse_lock_fns, requires = "pid")]
    pub lock_fns: Vec<crate::lock::spec::LockFnSpec>,

    /// Discover every pthread mutex the process contends on, ranked by total wait, with its data
    /// symbol and the call sites that waited most.
    #[arg(long, requires = "pid")]
    pub mutexes: bool,

    /// Wait and hold per Python lock object and thread: threading.Lock and RLock, and what is
    /// built on them (Condition, Semaphore, Event, queue.Queue), next to the GIL report. A wait
    /// runs from acquire() to having the lock, a hold from there to release(). CPython 3.6–3.12
    /// (their locks are semaphores, probed in libc: any build, stripped or not); 3.13+ take
    /// threading.Lock inline (PyMutex) and are refused. See docs/locks.md.
    #[arg(long = "py-locks", requires = "pid")]
    pub py_locks: bool,

    /// Command to start and observe from its first bytecode (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
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

    pub fn json_to_stdout(&self) -> bool {
        self.json.as_deref().is_some_and(|p| p.as_os_str() == "-")
    }
}
