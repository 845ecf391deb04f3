//! Thread names: the OS name from /proc and the Python `threading.Thread` name from memory.
//!
//! Names are collected while threads are alive (a thread that exits before the report is still
//! named in it), and Python names are retried for a while: a new thread takes the GIL before
//! `threading` has registered it.
use std::collections::HashMap;

use crate::{
    python::{memory::ProcessMemory, threads},
    target::process::Process,
};

/// How many times to look for a thread's Python name before giving up on it.
const PYTHON_NAME_TRIES: u32 = 20;

pub struct ThreadNames {
    process: Process,
    memory: ProcessMemory,
    version: (u8, u8),
    runtime_addr: Option<u64>,
    os: HashMap<u32, String>,
    python: HashMap<u32, String>,
    tries: HashMap<u32, u32>,
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
            tries: HashMap::new(),
        }
    }

    pub fn has_runtime_addr(&self) -> bool {
        self.runtime_addr.is_some()
    }

    pub fn set_runtime_addr(&mut self, addr: Option<u64>) {
        self.runtime_addr = addr;
    }

    /// Learns the names of threads seen so far. `tstates` maps tid → PyThreadState* where a
    /// take_gil probe saw it (0 where the strategy cannot see it: the reader then pairs threads
    /// through the interpreter's own thread list).
    pub fn refresh(&mut self, tstates: &HashMap<u32, u64>) {
        // /proc is re-read only when a thread we have not named yet appears.
        if tstates.keys().any(|tid| !self.os.contains_key(tid)) || self.os.is_empty() {
            for (tid, name) in self.process.threads() {
                self.os.insert(tid, name);
            }
        }
        let Some(runtime) = self.runtime_addr else {
            return;
        };
        let wanted: Vec<u32> = tstates
            .keys()
            .filter(|tid| !self.python.contains_key(tid))
            .filter(|tid| self.tries.get(tid).copied().unwrap_or(0) < PYTHON_NAME_TRIES)
            .copied()
            .collect();
        if wanted.is_empty() {
            return;
        }
        for tid in &wanted {
            *self.tries.entry(*tid).or_default() += 1;
        }
        let known: HashMap<u32, u64> = tstates
            .iter()
            .filter(|(_, s)| **s != 0)
            .map(|(&t, &s)| (t, s))
            .collect();
        // Reading another process's memory can fail at any moment (it exits, it is mid-update);
        // a name is a nicety, so failures only mean "try again later".
        if let Ok(found) = threads::thread_names(&self.memory, self.version, runtime, &known) {
            self.python.extend(found);
        }
    }

    /// (OS name, Python name) of a thread.
    pub fn get(&self, tid: u32) -> (String, Option<String>) {
        let os = self.os.get(&tid).cloned().unwrap_or_else(|| "?".to_owned());
        (os, self.python.get(&tid).cloned())
    }
}
