//! How a thread's Python frame chain is laid out, per version: what the kernel needs to walk it
//! (blame's frame walk, observer-ebpf/src/blame.rs) and how to read a frame's position.
//!
//! ≤3.12: offsets checked with offsetof() against each pyenv build's headers (3.8.18, 3.9.18,
//! 3.10.13, 3.11.7, 3.12.1; Debian's 3.11.2 has 3.11.7's layout). 3.13+: from `_Py_DebugOffsets`
//! (thread_state.current_frame and the interpreter_frame block), so patch releases that move
//! fields are followed.
use anyhow::{Context, Result, bail};

use super::{
    code::InstrPosition,
    debug_offsets::{DEBUG_TABLE_LEN, frame_block, tstate_current_frame},
    layout::word,
    memory::RemoteMemory,
};

/// The frame chain's offsets (bytes, x86_64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameWalk {
    /// Pointer in the thread state to the current frame, or (3.11–3.12) to the `_PyCFrame`.
    pub tstate_frame: u64,
    /// 3.11–3.12: `_PyCFrame.current_frame`.
    pub cframe_frame: Option<u64>,
    pub frame_back: u64,
    pub frame_code: u64,
    pub frame_pos: u64,
    pub position: PositionKind,
    /// `_PyInterpreterFrame.owner` (3.11+).
    pub frame_owner: Option<u64>,
    /// Owners from this value up are shims, not Python code (3.12+: FRAME_OWNED_BY_CSTACK = 3;
    /// 3.14 added FRAME_OWNED_BY_INTERPRETER = 3 before CSTACK = 4; 3.15 dropped CSTACK).
    pub skip_owner_from: Option<u8>,
    /// 3.14+: `f_executable` is a `_PyStackRef`, whose low bits are tags.
    pub code_tag_mask: u64,
}

/// What the kernel reads as a frame's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionKind {
    /// `f_lasti` in bytes (3.8–3.9).
    LastiBytes,
    /// `f_lasti` in code units (3.10).
    LastiUnits,
    /// An instruction pointer (3.11+).
    InstrPtr,
}

impl PositionKind {
    /// The raw value the kernel stored as this version's position.
    pub fn position(self, raw: u64) -> InstrPosition {
        match self {
            PositionKind::LastiBytes => InstrPosition::LastiBytes(raw as i64),
            PositionKind::LastiUnits => InstrPosition::LastiUnits(raw as i64),
            PositionKind::InstrPtr if raw == 0 => InstrPosition::Unknown,
            PositionKind::InstrPtr => InstrPosition::InstrPtr(raw),
        }
    }
}

/// The frame layout of CPython 3.`minor` (`runtime`: `_PyRuntime`, read on 3.13+).
pub fn frame_walk(mem: &dyn RemoteMemory, minor: u8, runtime: Option<u64>) -> Result<FrameWalk> {
    let old = |lasti: u64, position| FrameWalk {
        tstate_frame: 24,
        cframe_frame: None,
        frame_back: 24,
        frame_code: 32,
        frame_pos: lasti,
        position,
        frame_owner: None,
        skip_owner_from: None,
        code_tag_mask: 0,
    };
    Ok(match minor {
        8 | 9 => old(104, PositionKind::LastiBytes),
        10 => old(96, PositionKind::LastiUnits),
        11 => FrameWalk {
            tstate_frame: 56,
            cframe_frame: Some(8),
            frame_back: 48,
            frame_code: 32,
            frame_pos: 56,
            position: PositionKind::InstrPtr,
            frame_owner: Some(69),
            skip_owner_from: None,
            code_tag_mask: 0,
        },
        12 => FrameWalk {
            tstate_frame: 56,
            cframe_frame: Some(0),
            frame_back: 8,
            frame_code: 0,
            frame_pos: 56,
            position: PositionKind::InstrPtr,
            frame_owner: Some(70),
            skip_owner_from: Some(3),
            code_tag_mask: 0,
        },
        13.. => from_debug_offsets(mem, minor, runtime)?,
        _ => bail!("Python 3.{minor}: frames are not walked before 3.8"),
    })
}

fn from_debug_offsets(
    mem: &dyn RemoteMemory,
    minor: u8,
    runtime: Option<u64>,
) -> Result<FrameWalk> {
    let (Some(block), Some(cur)) = (frame_block(minor), tstate_current_frame(minor)) else {
        bail!("Python 3.{minor}: _Py_DebugOffsets layout not known");
    };
    let runtime = runtime.context("_PyRuntime not found")?;
    let mut raw = [0u8; DEBUG_TABLE_LEN];
    mem.read(runtime, &mut raw)
        .with_context(|| format!("reading _Py_DebugOffsets at {runtime:#x}"))?;
    if &raw[..8] != b"xdebugpy" {
        bail!("no _Py_DebugOffsets at _PyRuntime {runtime:#x}");
    }
    let at = |pos: u64| u64::from_ne_bytes(word(&raw, pos as usize));
    let tstate_size = at(cur - 32);
    let current_frame = at(cur);
    let (size, previous, executable, instr_ptr, owner) = (
        at(block),
        at(block + 8),
        at(block + 16),
        at(block + 24),
        at(block + 40),
    );
    if !(48..=512).contains(&size) {
        bail!("_Py_DebugOffsets: implausible sizeof(_PyInterpreterFrame) {size}");
    }
    for (what, v) in [
        ("previous", previous),
        ("executable", executable),
        ("instr_ptr", instr_ptr),
    ] {
        if v % 8 != 0 || v + 8 > size {
            bail!("_Py_DebugOffsets: frame {what} offset {v} outside a {size}-byte frame");
        }
    }
    if owner >= size || current_frame % 8 != 0 || current_frame + 8 > tstate_size {
        bail!(
            "_Py_DebugOffsets: frame owner {owner} or tstate current_frame {current_frame} out of place"
        );
    }
    Ok(FrameWalk {
        tstate_frame: current_frame,
        cframe_frame: None,
        frame_back: previous,
        frame_code: executable,
        frame_pos: instr_ptr,
        position: PositionKind::InstrPtr,
        frame_owner: Some(owner),
        // 3.13: CSTACK = 3; 3.14: INTERPRETER = 3, CSTACK = 4; 3.15: INTERPRETER = 3.
        skip_owner_from: Some(3),
        code_tag_mask: if minor >= 14 { 3 } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::fake_memory::FakeMemory;

    #[test]
    fn every_supported_minor_has_a_walk_and_older_ones_say_why_not() {
        let mem = FakeMemory::new();
        for minor in 8..=12 {
            assert!(frame_walk(&mem, minor, None).is_ok(), "3.{minor}");
        }
        let e = frame_walk(&mem, 7, None).unwrap_err();
        assert!(format!("{e}").contains("before 3.8"), "{e}");
        // 3.13+ read the table: no runtime, no walk.
        assert!(frame_walk(&mem, 13, None).is_err());
    }

    /// Debian's 3.14.10 table (values read from the live process).
    #[test]
    fn reads_the_debug_table() {
        let mut raw = vec![0u8; DEBUG_TABLE_LEN];
        raw[..8].copy_from_slice(b"xdebugpy");
        for (pos, v) in [
            (176u64, 832u64),
            (208, 72),
            (248, 88),
            (256, 8),
            (264, 0),
            (272, 56),
            (280, 80),
            (288, 74),
        ] {
            raw[pos as usize..pos as usize + 8].copy_from_slice(&v.to_ne_bytes());
        }
        let mut mem = FakeMemory::new();
        mem.put(0x1000, &raw);
        let w = frame_walk(&mem, 14, Some(0x1000)).unwrap();
        assert_eq!(
            (w.tstate_frame, w.frame_back, w.frame_code, w.frame_pos),
            (72, 8, 0, 56)
        );
        assert_eq!((w.frame_owner, w.code_tag_mask), (Some(74), 3));
        // A table whose frame block is garbage is refused.
        raw[264..272].copy_from_slice(&4096u64.to_ne_bytes());
        let mut mem = FakeMemory::new();
        mem.put(0x1000, &raw);
        assert!(frame_walk(&mem, 14, Some(0x1000)).is_err());
    }
}
