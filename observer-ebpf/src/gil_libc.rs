//! The symbol-free GIL strategy: probes in libc, filtered to the GIL's own addresses.
//!
//! Stripped, LTO-built interpreters (Debian's, uv's, Docker slim) have no take_gil/drop_gil
//! symbols, and drop_gil is often inlined. But every GIL build takes and drops the GIL through
//! pthread calls on fields of the GIL struct, and those calls go to libc:
//! - `pthread_mutex_lock(&gil->mutex)` opens both take_gil and drop_gil. By a thread that does
//!   not hold the GIL it starts a wait; by the holder it ends a hold.
//! - `pthread_mutex_lock(&gil->switch_mutex)` is taken by take_gil the moment it has the GIL
//!   (just before it sets `locked`, FORCE_SWITCHING): the wait ends and the hold starts. The
//!   `pthread_cond_signal(&gil->switch_cond)` that follows would do too, but ending the wait
//!   one call earlier keeps one more probe trap out of the measured wait.
//! - `pthread_cond_signal(&gil->cond)` happens only in drop_gil: if we took a drop for a take
//!   (the thread held the GIL since before we attached), it cancels that false wait.
//!
//! Userspace writes the three addresses into GIL_ADDRS once the GIL exists (for `-- CMD`, after
//! the interpreter has started); until then every call is ignored.
use aya_ebpf::{
    macros::{map, uprobe},
    maps::Array,
    programs::ProbeContext,
};
use observer_common::{
    GIL_ADDR_COND, GIL_ADDR_MUTEX, GIL_ADDR_SLOTS, GIL_ADDR_SWITCH_MUTEX, StatKind, ThreadGilState,
};

use crate::{THREADS, current_tid, now_ns, record, track_thread};

#[map]
static GIL_ADDRS: Array<u64> = Array::with_max_entries(GIL_ADDR_SLOTS, 0);

#[inline(always)]
pub(crate) fn gil_addr(slot: u32) -> u64 {
    GIL_ADDRS.get(slot).copied().unwrap_or(0)
}

#[uprobe]
pub fn gil_mutex_lock(ctx: ProbeContext) -> u32 {
    let addr: u64 = ctx.arg(0).unwrap_or(0);
    if addr == 0 {
        return 0;
    }
    let now = now_ns();
    if addr == gil_addr(GIL_ADDR_SWITCH_MUTEX) {
        let tid = current_tid();
        let Some(st) = THREADS.get_ptr_mut(&tid) else {
            return 0;
        };
        // SAFETY: this thread's own entry; only this thread writes it.
        unsafe {
            let start = (*st).take_start_ns;
            if start != 0 {
                (*st).take_start_ns = 0;
                (*st).hold_start_ns = now;
                record(tid, StatKind::Wait, now - start);
                crate::handoff::acquired(tid, now - start, now);
            }
        }
        return 0;
    }
    if addr != gil_addr(GIL_ADDR_MUTEX) {
        return 0;
    }
    let tid = current_tid();
    let Some(st) = THREADS.get_ptr_mut(&tid) else {
        // First sight of this thread: it does not hold the GIL as far as we know, so this
        // opens a take.
        track_thread(
            tid,
            ThreadGilState {
                take_start_ns: now,
                hold_start_ns: 0,
                tstate: 0,
            },
        );
        return 0;
    };
    // SAFETY: this thread's own entry; only this thread writes it.
    unsafe {
        if (*st).hold_start_ns != 0 {
            let held = now - (*st).hold_start_ns;
            (*st).hold_start_ns = 0;
            record(tid, StatKind::Hold, held);
            crate::handoff::dropped(tid, now - held, now);
        } else if (*st).take_start_ns == 0 {
            (*st).take_start_ns = now;
        }
    }
    0
}

#[uprobe]
pub fn gil_cond_signal(ctx: ProbeContext) -> u32 {
    let addr: u64 = ctx.arg(0).unwrap_or(0);
    if addr == 0 || addr != gil_addr(GIL_ADDR_COND) {
        return 0;
    }
    let tid = current_tid();
    let Some(st) = THREADS.get_ptr_mut(&tid) else {
        return 0;
    };
    // drop_gil is signalling: a "take" still open on this thread was this drop, misread because
    // the thread held the GIL from before we attached. Forget it.
    // SAFETY: this thread's own entry; only this thread writes it.
    unsafe {
        if (*st).hold_start_ns == 0 {
            (*st).take_start_ns = 0;
        }
    }
    0
}
