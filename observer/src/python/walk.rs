//! The walk from `_PyRuntime` to the main interpreter (through `_Py_DebugOffsets` on 3.13+)
//! and along its list of thread states. Every loop is bounded: the target keeps running.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail};

use super::debug_offsets::{debug_table, read_table};
use super::layout::{Layout, TSTATE_NEXT, layout_for};
use super::memory::RemoteMemory;
use super::objects::Reader;

const MAX_THREADS: usize = 1 << 14;
const MAX_INTERPRETERS: usize = 256;

/// The main interpreter's `PyInterpreterState*` (3.7+; 3.13+ through `_Py_DebugOffsets`).
pub fn main_interpreter(
    mem: &dyn RemoteMemory,
    version: (u8, u8),
    runtime_addr: u64,
) -> Result<u64> {
    Reader::at_main_interpreter(mem, version, runtime_addr).map(|(_, interp)| interp)
}

impl<'a> Reader<'a> {
    /// A reader with this version's layout (refreshed from `_Py_DebugOffsets` on 3.13+), and the
    /// main interpreter it found.
    pub(super) fn at_main_interpreter(
        mem: &'a dyn RemoteMemory,
        version: (u8, u8),
        runtime_addr: u64,
    ) -> Result<(Self, u64)> {
        let (major, minor) = version;
        let mut layout = layout_for(minor)
            .with_context(|| format!("Python {major}.{minor} is not supported"))?;
        let mut reader = Reader {
            mem,
            layout,
            types: HashMap::new(),
        };
        let interp = reader.main_interpreter(minor, runtime_addr, &mut layout)?;
        reader.layout = layout;
        Ok((reader, interp))
    }
}

impl Reader<'_> {
    /// Finds the main interpreter; on 3.13+ also refreshes `layout` from the debug table.
    fn main_interpreter(&mut self, minor: u8, runtime: u64, layout: &mut Layout) -> Result<u64> {
        if debug_table(minor).is_some() {
            match self.apply_debug_offsets(minor, runtime, layout) {
                Ok(Some(interp)) => return Ok(interp),
                // 3.13 builds without the table keep the static layout (checked on 3.13.0).
                Ok(None) if minor == 13 => {}
                Ok(None) => bail!("no _Py_DebugOffsets cookie at _PyRuntime {runtime:#x}"),
                Err(e) => return Err(e),
            }
        }
        let interp = self.nonnull(
            runtime.wrapping_add(layout.runtime_interp_main),
            "_PyRuntime.interpreters.main",
        )?;
        // Garbage there would pass for an interpreter: its first thread state must name it.
        let head = self.nonnull(
            interp.wrapping_add(layout.interp_threads_head),
            "main interpreter's thread list",
        )?;
        if let Some(off) = layout.tstate_interp {
            let owner = self.ptr(head.wrapping_add(off))?;
            if owner != interp {
                bail!("{interp:#x} is not an interpreter: its first thread state names {owner:#x}");
            }
        }
        Ok(interp)
    }

    /// Ok(None) when `_PyRuntime` carries no debug table (so the static layout stands).
    fn apply_debug_offsets(
        &mut self,
        minor: u8,
        runtime: u64,
        layout: &mut Layout,
    ) -> Result<Option<u64>> {
        let Some(v) = read_table(self.mem, minor, runtime)? else {
            return Ok(None);
        };
        v.apply(layout);
        self.layout = *layout;
        // New interpreters are pushed at the head, so the main one is the list's tail.
        let mut interp = self.nonnull(
            runtime.wrapping_add(v.interpreters_head),
            "interpreters.head",
        )?;
        let mut seen = HashSet::new();
        loop {
            if !seen.insert(interp) || seen.len() > MAX_INTERPRETERS {
                bail!("interpreter list loops or is too long");
            }
            let next = self.ptr(interp.wrapping_add(v.interp_next))?;
            if next == 0 {
                break;
            }
            interp = next;
        }
        // The main interpreter's id is 0 (the id is an int64_t).
        let id = self.ptr(interp.wrapping_add(v.interp_id))?;
        if id != 0 {
            bail!("last interpreter at {interp:#x} has id {id}, not the main interpreter's 0");
        }
        Ok(Some(interp))
    }

    /// (kernel TID, pthread ident) of every thread state in the interpreter's list.
    pub(super) fn walk_threads(&self, interp: u64, native_off: u64) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut ts = self.ptr(interp.wrapping_add(self.layout.interp_threads_head))?;
        while ts != 0 && seen.len() < MAX_THREADS && seen.insert(ts) {
            let native = self.ptr(ts.wrapping_add(native_off))?;
            let ident = self.ptr(ts.wrapping_add(self.layout.tstate_thread_id))?;
            // A thread state of another interpreter means the list (or offset) is wrong.
            if let Some(off) = self.layout.tstate_interp {
                let owner = self.ptr(ts.wrapping_add(off))?;
                if owner != interp {
                    bail!(
                        "thread state {ts:#x} belongs to interpreter {owner:#x}, not {interp:#x}"
                    );
                }
            }
            if let Ok(tid) = u32::try_from(native) {
                if tid != 0 {
                    out.push((tid, ident));
                }
            }
            ts = self.ptr(ts.wrapping_add(TSTATE_NEXT))?;
        }
        Ok(out)
    }
}
