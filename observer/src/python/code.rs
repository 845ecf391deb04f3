//! Python code objects of a live CPython process, read from outside: a frame's code object
//! address and raw instruction position (as the kernel read them) become `qualname
//! (file:line)`.
//!
//! Skeleton: the interface the `blame` branch builds on; the readers follow.
// Until the blame report calls it, the binary does not use this module.
#![allow(dead_code)]

use anyhow::{Result, bail};

use super::memory::RemoteMemory;

/// Where a frame was in its code object, as the kernel read it (raw, version-specific).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstrPosition {
    /// 3.8–3.9: `PyFrameObject.f_lasti`, a byte offset into `co_code` (-1 = not started).
    LastiBytes(i64),
    /// 3.10: `PyFrameObject.f_lasti`, in 2-byte code units (-1 = not started).
    LastiUnits(i64),
    /// 3.11+: `_PyInterpreterFrame.prev_instr` (3.11–3.12) / `instr_ptr` (3.13+), a pointer
    /// into the code object's own bytecode (`co_code_adaptive`).
    InstrPtr(u64),
    /// Nothing usable was read.
    Unknown,
}

/// A frame's place in Python source.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CodeLocation {
    /// `co_qualname` on 3.11+ (`Class.method`, `outer.<locals>.inner`); 3.8–3.10 code
    /// objects carry only `co_name` (`method`, `inner`).
    pub qualname: String,
    pub filename: String,
    /// The line being executed, when the position maps to one.
    pub line: Option<u32>,
    /// `co_firstlineno`: the `def` line.
    pub first_line: u32,
}

/// Turns (code object, position) pairs of one process into source locations.
pub struct Symbolizer<'m> {
    memory: &'m dyn RemoteMemory,
    version: (u8, u8),
}

impl<'m> Symbolizer<'m> {
    /// `runtime_addr` is `_PyRuntime` in the target (needed on 3.13+, where the code object's
    /// offsets come from `_Py_DebugOffsets`; ignored before).
    pub fn new(
        memory: &'m dyn RemoteMemory,
        version: (u8, u8),
        runtime_addr: Option<u64>,
    ) -> Result<Self> {
        let _ = runtime_addr;
        Ok(Self { memory, version })
    }

    /// The location of `pos` in the code object at `code`. Cached per code object (code
    /// objects are immutable; an address reused after the object is freed keeps the old
    /// entry: a known limit).
    pub fn locate(&mut self, code: u64, pos: InstrPosition) -> Result<CodeLocation> {
        let _ = pos;
        bail!("symbolizing code object {code:#x}: not implemented yet")
    }
}
