//! Where the main interpreter's GIL (`struct _gil_runtime_state`) lives in a running process.
//!
//! The symbol-free strategy filters libc calls by the addresses of the GIL's mutex and
//! condition variables, so it needs the struct's address. 3.8–3.11 embed the struct in
//! `_PyRuntime` (an exported symbol, present in stripped builds too); 3.12+ give each interpreter
//! a pointer to its GIL. Every candidate is checked against the live struct before use.
use anyhow::{Context as _, bail};

use super::locate::Interpreter;
use crate::{
    error::{Exit, user},
    python::{
        memory::{ProcessMemory, RemoteMemory},
        walk,
    },
    target::process::Process,
};

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

/// Finds the GIL of a running interpreter (what the symbol-free strategy filters by); a failure
/// is the user's one line.
pub fn find(process: &Process, interp: &Interpreter) -> anyhow::Result<GilAddress> {
    let runtime = interp.runtime_address_of("_PyRuntime").ok_or_else(|| {
        user(
            Exit::Unsupported,
            format!(
                "{} exports no _PyRuntime: cannot find the GIL",
                interp.file.path
            ),
        )
    })?;
    locate(
        &ProcessMemory::new(process.pid),
        interp.version.minor_version(),
        runtime,
        interp.free_threaded,
    )
    .map_err(|e| {
        user(
            Exit::Unsupported,
            format!(
                "cannot find the GIL in PID {} (CPython {}): {e:#}",
                process.pid, interp.version
            ),
        )
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
            let interp = walk::main_interpreter(mem, version, runtime)
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

#[cfg(test)]
mod tests {
    //! The GIL locator on made-up memory: a real-looking GIL is found, garbage is refused.
    use proptest::prelude::*;

    use super::*;
    use crate::python::fake_memory::{FakeMemory, POOL};

    /// A running interpreter's GIL: switch interval 5000 µs, held, taken 7 times, last by
    /// `holder`; every other byte zero (as live, checked on 3.8–3.15).
    fn live_gil(layout: &GilLayout, holder: u64) -> Vec<u8> {
        let mut g = vec![0u8; GIL_LEN];
        let mut set = |off: u64, v: u64| {
            g[off as usize..off as usize + 8].copy_from_slice(&v.to_ne_bytes());
        };
        set(layout.interval, 5000);
        set(layout.interval + 8, holder);
        set(layout.locked, 1);
        set(layout.locked + 8, 7);
        if let Some(off) = layout.enabled {
            set(off, 1);
        }
        g
    }

    const RUNTIME: u64 = 0x10_0000;
    const INTERP: u64 = 0x20_0000;
    const TSTATE: u64 = 0x30_0000;

    /// A 3.12 process: `_PyRuntime` → main interpreter → its GIL pointer (+384) → `gil`.
    fn process_3_12(gil_at: u64, gil: &[u8]) -> FakeMemory {
        let mut mem = FakeMemory::new();
        mem.put_u64(RUNTIME + 48, INTERP)
            .put_u64(INTERP + 72, TSTATE)
            .put_u64(TSTATE + 16, INTERP)
            .put_u64(INTERP + 384, gil_at)
            .put(gil_at, gil);
        mem
    }

    #[test]
    fn finds_the_gil_the_interpreter_owns() {
        let gil = live_gil(&DEFAULT_LAYOUT, TSTATE);
        let mem = process_3_12(INTERP + 0x410, &gil);
        let found = locate(&mem, (3, 12), RUNTIME, false).unwrap();
        assert_eq!(found.addr, INTERP + 0x410);
        assert_eq!(found.enabled, None);
    }

    #[test]
    fn refuses_a_gil_outside_the_interpreter() {
        // A perfect GIL, but not the main interpreter's own: some other interpreter's.
        let gil = live_gil(&DEFAULT_LAYOUT, TSTATE);
        let mem = process_3_12(0x90_0000, &gil);
        let e = locate(&mem, (3, 12), RUNTIME, false).unwrap_err();
        assert!(
            format!("{e:#}").contains("outside the interpreter"),
            "{e:#}"
        );
    }

    #[test]
    fn refuses_what_only_looks_like_a_gil() {
        let at = INTERP + 0x410;
        // Zeroed memory with a small count in front: interval and locked pass, nothing else.
        let mut zeros_and_a_one = vec![0u8; GIL_LEN];
        zeros_and_a_one[0] = 1;
        // A live GIL whose mutex is on a robust list: not CPython's plain mutex.
        let mut robust = live_gil(&DEFAULT_LAYOUT, TSTATE);
        robust[(DEFAULT_LAYOUT.mutex + 24) as usize] = 0x40;
        // Never taken: no holder, no switches.
        let mut untaken = live_gil(&DEFAULT_LAYOUT, 0);
        untaken[24] = 0;
        // Interval out of range, locked not a flag.
        let mut odd_interval = live_gil(&DEFAULT_LAYOUT, TSTATE);
        odd_interval[..8].copy_from_slice(&u64::MAX.to_ne_bytes());
        let mut odd_locked = live_gil(&DEFAULT_LAYOUT, TSTATE);
        odd_locked[16] = 2;
        for (what, gil) in [
            ("zeros and a one", zeros_and_a_one),
            ("robust mutex", robust),
            ("never taken", untaken),
            ("interval", odd_interval),
            ("locked", odd_locked),
        ] {
            let mem = process_3_12(at, &gil);
            let r = locate(&mem, (3, 12), RUNTIME, false);
            assert!(r.is_err(), "{what}: accepted {r:?}");
        }
    }

    #[test]
    fn gil_in_the_runtime_is_checked_too() {
        let mut mem = FakeMemory::new();
        mem.put(RUNTIME + 360, &live_gil(&DEFAULT_LAYOUT, TSTATE));
        assert_eq!(
            locate(&mem, (3, 11), RUNTIME, false).unwrap().addr,
            RUNTIME + 360
        );
        let mut mem = FakeMemory::new();
        let mut moved = vec![0u8; GIL_LEN];
        moved[0] = 1;
        mem.put(RUNTIME + 360, &moved);
        assert!(locate(&mem, (3, 11), RUNTIME, false).is_err());
        // A runtime address at the top of the address space wraps instead of panicking.
        let garbage = FakeMemory::garbage(1);
        for minor in 8..=15 {
            let _ = locate(&garbage, (3, minor), u64::MAX - 8, true);
        }
    }

    #[test]
    fn a_disabled_free_threaded_gil_is_found_and_says_so() {
        // Never switched on: never taken, and that is no reason to refuse it.
        let mut gil = live_gil(&FREE_THREADED_LAYOUT, 0);
        gil[..8].fill(0);
        gil[(FREE_THREADED_LAYOUT.locked + 8) as usize] = 0;
        let mut mem = FakeMemory::new();
        mem.put_u64(RUNTIME + 48, INTERP)
            .put_u64(INTERP + 72, TSTATE)
            .put_u64(TSTATE + 16, INTERP)
            .put_u64(INTERP + 384, INTERP + 0x410)
            .put(INTERP + 0x410, &gil);
        let found = locate(&mem, (3, 12), RUNTIME, true).unwrap();
        assert_eq!(found.enabled, Some(false));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Garbage everywhere: an error or a GIL that passes every check, never a panic.
        #[test]
        fn locate_survives_garbage(
            seed in any::<u64>(),
            minor in 6u8..=16,
            runtime in prop_oneof![(0u64..64).prop_map(|k| POOL + k * 0x40), any::<u64>()],
            free_threaded in any::<bool>(),
        ) {
            let mem = FakeMemory::garbage(seed);
            if let Ok(gil) = locate(&mem, (3, minor), runtime, free_threaded) {
                prop_assert!(check(&mem, gil.addr, &gil.layout).is_ok());
            }
        }
    }
}
