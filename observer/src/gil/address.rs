//! Where the main interpreter's GIL (`struct _gil_runtime_state`) lives in a running process.
//!
//! The symbol-free strategy filters libc calls by the addresses of the GIL's mutex and
//! condition variables, so it needs the struct's address. 3.8–3.11 embed the struct in
//! `_PyRuntime` (an exported symbol, present in stripped builds too); 3.12+ give each interpreter
//! a pointer to its GIL. Every candidate is checked against the live struct before use.
use anyhow::{Context as _, bail};

use crate::python::{memory::RemoteMemory, threads};

/// Field offsets in `struct _gil_runtime_state` (x86_64). Default builds 3.8–3.15: interval
/// +0, last_holder +8, locked +16, switch_number +24, cond +32, mutex +80, switch_cond +120, switch_mutex +168.
/// `last_holder` and `switch_number` follow `interval` and `locked` by 8 bytes in both layouts.
/// Free-threaded builds (3.13t+) put `int enabled` first, which moves every field by 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilLayout {
    pub enabled: Option<u64>,
    pub interval: u64,
    pub locked: u64,
    pub cond: u64,
    pub mutex: u64,
    pub switch_mutex: u64,
}

pub const DEFAULT_LAYOUT: GilLayout = GilLayout {
    enabled: None,
    interval: 0,
    locked: 16,
    cond: 32,
    mutex: 80,
    switch_mutex: 168,
};
pub const FREE_THREADED_LAYOUT: GilLayout = GilLayout {
    enabled: Some(0),
    interval: 8,
    locked: 24,
    cond: 40,
    mutex: 88,
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

pub fn locate(
    mem: &dyn RemoteMemory,
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
                mem.read_u64(addr.wrapping_add(off))
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
            let addr = runtime.wrapping_add(off);
            is_gil(addr).with_context(|| format!("no GIL at _PyRuntime+{off:#x}"))?;
            found(addr, format!("_PyRuntime+{off:#x}"))
        }
        Place::PointerInInterp(off) => {
            let interp = threads::main_interpreter(mem, version, runtime)
                .context("finding the main interpreter")?;
            let addr = mem
                .read_u64(interp.wrapping_add(off))
                .context("reading the interpreter's GIL pointer")?;
            // The main interpreter owns its GIL (`interp->_gil`, +0x410 in 3.12, +0x1e38..
            // +0x1e68 in 3.13–3.15): a pointer elsewhere is not its GIL.
            let owned = |p: u64| p.wrapping_sub(interp) < MAX_GIL_IN_INTERP;
            let why = match owned(addr) {
                true => is_gil(addr),
                false => Err(anyhow::anyhow!(
                    "{addr:#x} is outside the interpreter state"
                )),
            };
            let why = match why {
                Ok(()) => return found(addr, format!("main interpreter+{off:#x} → GIL")),
                Err(e) => e,
            };
            // A patch release may have moved the field: look for the one pointer in the
            // interpreter's first fields that leads to a live GIL struct.
            for probe in (0..1024).step_by(8) {
                let Ok(p) = mem.read_u64(interp.wrapping_add(probe)) else {
                    break;
                };
                if owned(p) && is_gil(p).is_ok() {
                    return found(p, format!("main interpreter+{probe:#x} → GIL (searched)"));
                }
            }
            bail!(
                "no GIL found in the main interpreter state at {interp:#x} \
                 (interp+{off:#x} → {addr:#x}: {why:#})"
            )
        }
    }
}

/// How far into the main interpreter's state its own GIL may sit.
const MAX_GIL_IN_INTERP: u64 = 1 << 16;

/// Bytes of the GIL struct read to check it (the free-threaded layout is the longer one).
const GIL_LEN: usize = 216;

/// A live GIL struct, by what holds in every running interpreter and rarely in anything else:
/// a sane switch interval (µs), a `locked` flag of 0 or 1, two mutexes of the default kind
/// (their robust-list links at +24..+40 stay zero: glibc's `__list`, musl's `_m_prev/_m_next`),
/// and, once the GIL is switched on, a last holder and a switch count (the first take sets both).
fn check(mem: &dyn RemoteMemory, addr: u64, layout: &GilLayout) -> anyhow::Result<()> {
    let mut raw = [0u8; GIL_LEN];
    mem.read(addr, &mut raw)
        .with_context(|| format!("reading {addr:#x}"))?;
    let word = |off: u64| -> u64 {
        let at = off as usize;
        raw.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    };
    let interval = word(layout.interval);
    let locked = word(layout.locked) as u32 as i32;
    if !(1..=100_000_000).contains(&interval) || !(0..=1).contains(&locked) {
        bail!("not a GIL at {addr:#x}: interval {interval}, locked {locked}");
    }
    for (name, mutex) in [
        ("mutex", layout.mutex),
        ("switch_mutex", layout.switch_mutex),
    ] {
        if word(mutex + 24) != 0 || word(mutex + 32) != 0 {
            bail!("not a GIL at {addr:#x}: its {name} is not a plain pthread mutex");
        }
    }
    let switched_on = layout.enabled.is_none_or(|off| word(off) as u32 != 0);
    let (holder, switches) = (word(layout.interval + 8), word(layout.locked + 8));
    if switched_on && (holder == 0 || holder % 8 != 0 || switches == 0) {
        bail!(
            "not a GIL at {addr:#x}: last holder {holder:#x}, {switches} switches \
             (a running interpreter's GIL has been taken)"
        );
    }
    Ok(())
}
