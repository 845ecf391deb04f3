//! Where the main interpreter's GIL (`struct _gil_runtime_state`) lives in a running process.
//!
//! The symbol-free strategy filters libc calls by the addresses of the GIL's mutex and
//! condition variables, so it needs the struct's address. 3.8–3.11 embed the struct in
//! `_PyRuntime` (an exported symbol, present in stripped builds too); 3.12+ give each interpreter
//! a pointer to its GIL. Every candidate is checked against the live struct before use.
use anyhow::{Context as _, bail};

use crate::python::{memory::ProcessMemory, threads};

/// Field offsets in `struct _gil_runtime_state` (x86_64). Default builds 3.8–3.15: interval
/// +0, last_holder +8, locked +16, switch_number +24, cond +32, mutex +80, switch_cond +120, switch_mutex +168.
/// Free-threaded builds (3.13t+) put `int enabled` first, which moves every field by 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilLayout {
    pub enabled: Option<u64>,
    pub interval: u64,
    pub locked: u64,
    pub cond: u64,
    pub mutex: u64,
    pub switch_cond: u64,
    pub switch_mutex: u64,
}

pub const DEFAULT_LAYOUT: GilLayout = GilLayout {
    enabled: None,
    interval: 0,
    locked: 16,
    cond: 32,
    mutex: 80,
    switch_cond: 120,
    switch_mutex: 168,
};
pub const FREE_THREADED_LAYOUT: GilLayout = GilLayout {
    enabled: Some(0),
    interval: 8,
    locked: 24,
    cond: 40,
    mutex: 88,
    switch_cond: 128,
    switch_mutex: 176,
};

/// How the GIL was found, for the probe plan.
#[derive(Debug, Clone)]
pub struct GilAddress {
    pub addr: u64,
    pub how: String,
    pub layout: GilLayout,
    /// Free-threaded builds: whether the GIL is switched on (PYTHON_GIL=1, -X gil=1, or an
    /// extension without Py_mod_gil). None for default builds, where it always is.
    pub enabled: Option<bool>,
}

/// Where `_PyRuntime` embeds the GIL (3.8–3.11), or where the main interpreter keeps its
/// pointer to it (3.12+). Checked with offsetof() on pyenv builds; Debian's 3.11.2 agrees.
enum Place {
    InRuntime(u64),
    PointerInInterp(u64),
}

fn place(minor: u8) -> Option<Place> {
    Some(match minor {
        8 => Place::InRuntime(1152),
        9 | 10 => Place::InRuntime(352),
        11 => Place::InRuntime(360),
        12 => Place::PointerInInterp(384),
        13..=15 => Place::PointerInInterp(16),
        _ => return None,
    })
}

/// Where the main interpreter's GIL sits inside `_PyRuntime` (3.8–3.11), for code that names
/// it by address; None from 3.12, where each interpreter points at its GIL.
pub fn offset_in_runtime(minor: u8) -> Option<u64> {
    match place(minor)? {
        Place::InRuntime(off) => Some(off),
        Place::PointerInInterp(_) => None,
    }
}

pub fn locate(
    mem: &ProcessMemory,
    version: (u8, u8),
    runtime: u64,
    free_threaded: bool,
) -> anyhow::Result<GilAddress> {
    let layout = if free_threaded {
        FREE_THREADED_LAYOUT
    } else {
        DEFAULT_LAYOUT
    };
    let found = |addr: u64, how: String| -> anyhow::Result<GilAddress> {
        let enabled = match layout.enabled {
            Some(off) => Some(
                mem.read_u64(addr + off)
                    .context("reading the GIL's enabled count")? as u32
                    != 0,
            ),
            None => None,
        };
        Ok(GilAddress {
            addr,
            how,
            layout,
            enabled,
        })
    };
    let is_gil = |addr: u64| check(mem, addr, &layout);
    let minor = version.1;
    let Some(place) = place(minor) else {
        bail!("finding the GIL without symbols needs CPython 3.8 or newer");
    };
    match place {
        Place::InRuntime(off) => {
            let addr = runtime + off;
            is_gil(addr).with_context(|| format!("no GIL at _PyRuntime+{off:#x}"))?;
            found(addr, format!("_PyRuntime+{off:#x}"))
        }
        Place::PointerInInterp(off) => {
            let interp = threads::main_interpreter(mem, version, runtime)
                .context("finding the main interpreter")?;
            let addr = mem
                .read_u64(interp + off)
                .context("reading the interpreter's GIL pointer")?;
            if is_gil(addr).is_ok() {
                return found(addr, format!("main interpreter+{off:#x} → GIL"));
            }
            // A patch release may have moved the field: look for the one pointer in the
            // interpreter's first fields that leads to a live GIL struct.
            for probe in (0..1024).step_by(8) {
                let Ok(p) = mem.read_u64(interp + probe) else {
                    break;
                };
                if p > 4096 && is_gil(p).is_ok() {
                    return found(p, format!("main interpreter+{probe:#x} → GIL (searched)"));
                }
            }
            bail!("no GIL pointer found in the main interpreter state")
        }
    }
}

/// A live GIL struct: a sane switch interval (µs) and a `locked` flag of 0 or 1.
fn check(mem: &ProcessMemory, addr: u64, layout: &GilLayout) -> anyhow::Result<()> {
    let mut head = [0u8; 32];
    mem.read(addr, &mut head)
        .with_context(|| format!("reading {addr:#x}"))?;
    let field = |off: u64, len: usize| &head[off as usize..off as usize + len];
    let interval = u64::from_ne_bytes(field(layout.interval, 8).try_into()?);
    let locked = i32::from_ne_bytes(field(layout.locked, 4).try_into()?);
    if !(1..=100_000_000).contains(&interval) || !(0..=1).contains(&locked) {
        bail!("not a GIL: interval {interval}, locked {locked}");
    }
    Ok(())
}
