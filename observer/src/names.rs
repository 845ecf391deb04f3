//! Thread names: the OS name from /proc and the Python `threading.Thread` name from memory.
//!
//! Names are collected while threads are alive (a thread that exits before the report is still
//! named in it). A new thread takes the GIL before `threading` has registered it, and a
//! short-lived one may be gone a few hundred milliseconds later, so a thread without its Python
//! name yet is looked at again every few milliseconds for a while after it first appears, then
//! at the normal pace until PYTHON_NAME_PATIENCE has passed.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    python::{memory::ProcessMemory, naming},
    target::process::Process,
};

/// How long after a thread first appears its Python name is still looked for.
const PYTHON_NAME_PATIENCE: Duration = Duration::from_secs(3);
/// How long after a thread appears (or the process's thread count changes) names are looked
/// for at the fast pace.
const HOT: Duration = Duration::from_millis(500);

pub struct ThreadNames {
    process: Process,
    memory: ProcessMemory,
    version: (u8, u8),
    runtime_addr: Option<u64>,
    os: HashMap<u32, String>,
    python: HashMap<u32, String>,
    first_seen: HashMap<u32, Instant>,
    /// The process's thread count as /proc last said (its task directory's link count).
    task_links: u64,
    /// Look at the fast pace until then (a thread started or ended).
    hot_until: Option<Instant>,
}

impl ThreadNames {
    pub fn new(process: Process, version: (u8, u8), runtime_addr: Option<u64>) -> Self {
        let memory = ProcessMemory::new(process.pid);
        Self {
            process,
            memory,
            version,
            runtime_addr,
            os: HashMap::new(),
            python: HashMap::new(),
            first_seen: HashMap::new(),
            task_links: 0,
            hot_until: None,
        }
    }

    pub fn has_runtime_addr(&self) -> bool {
        self.runtime_addr.is_some()
    }

    pub fn set_runtime_addr(&mut self, addr: Option<u64>) {
        self.runtime_addr = addr;
    }

    /// Python names exist from 3.7 on (3.6's `threading` keeps them where we do not read).
    fn reads_python_names(&self) -> bool {
        self.version >= (3, 7)
    }

    /// Threads still waiting for their Python name, within the patience window.
    fn pending(&self, now: Instant, within: Duration) -> impl Iterator<Item = u32> + '_ {
        self.first_seen
            .iter()
            .filter(move |(tid, seen)| {
                !self.python.contains_key(tid) && now.duration_since(**seen) < within
            })
            .map(|(tid, _)| *tid)
    }

    /// Whether names should be looked for at the fast pace now: a thread appeared a moment ago
    /// and has no Python name yet, or the process's thread count just changed (one syscall).
    pub fn wants_fast(&mut self) -> bool {
        let now = Instant::now();
        if let Ok(meta) = std::fs::metadata(self.process.proc_path("task")) {
            use std::os::unix::fs::MetadataExt as _;
            // /proc/PID/task's link count is 2 + the number of threads.
            if meta.nlink() != self.task_links {
                self.task_links = meta.nlink();
                self.hot_until = Some(now + HOT);
            }
        }
        if self.hot_until.is_some_and(|t| now < t) {
            return true;
        }
        self.reads_python_names()
            && self.runtime_addr.is_some()
            && self.pending(now, HOT).next().is_some()
    }

    /// Learns the names of threads seen so far. `tstates` maps tid → PyThreadState* where a
    /// take_gil probe saw it (0 where the strategy cannot see it: the reader then pairs threads
    /// through the interpreter's own thread list).
    pub fn refresh(&mut self, tstates: &HashMap<u32, u64>) {
        let now = Instant::now();
        let mut new = false;
        for tid in tstates.keys() {
            self.first_seen.entry(*tid).or_insert_with(|| {
                new = true;
                now
            });
        }
        // /proc is re-read when a thread appears, and while some are young: 3.14 names the OS
        // thread only once the thread runs its Python code.
        if new || self.os.is_empty() || self.pending(now, HOT).next().is_some() {
            for (tid, name) in self.process.threads() {
                self.os.insert(tid, name);
            }
        }
        let Some(runtime) = self.runtime_addr else {
            return;
        };
        if !self.reads_python_names() || self.pending(now, PYTHON_NAME_PATIENCE).next().is_none() {
            return;
        }
        let known: HashMap<u32, u64> = tstates
            .iter()
            .filter(|(_, s)| **s != 0)
            .map(|(&t, &s)| (t, s))
            .collect();
        // Reading another process's memory can fail at any moment (it exits, it is mid-update);
        // a name is a nicety, so failures only mean "try again later".
        if let Ok(found) = naming::thread_names(&self.memory, self.version, runtime, &known) {
            self.python.extend(found);
        }
    }

    /// (OS name, Python name) of a thread. A thread that ended before gilwatch could read its
    /// OS name is "?".
    pub fn get(&self, tid: u32) -> (String, Option<String>) {
        let os = self.os.get(&tid).cloned().unwrap_or_else(|| "?".to_owned());
        (os, self.python.get(&tid).cloned())
    }
}
