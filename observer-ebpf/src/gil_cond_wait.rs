//! The contended half of the two-trap design: a thread that cannot have the GIL at once blocks in
//! `pthread_cond_timedwait(&gil->cond, &gil->mutex, interval)`, in a loop (each wait ends after
//! the switch interval, 5 ms by default, or when the GIL is dropped). While it is blocked it is
//! waiting, not holding; when it returns it may have the GIL: the return is the tentative start
//! of the hold, and the last return before drop_gil is the acquisition.
//!
//! These probes fire only on contended takes (and on other timed waits in the process, which the
//! address filter drops), at most 2 × 200 times a second per waiting thread: the uncontended
//! cycle stays at two traps.
use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use observer_common::GIL_ADDR_COND;

use crate::{THREADS, current_tid, gil_libc::gil_addr, now_ns};

/// `pthread_cond_timedwait` entry: a thread inside take_gil blocks on the GIL's condition.
#[uprobe]
pub fn gil_cond_wait_enter(ctx: ProbeContext) -> u32 {
    let cond: u64 = ctx.arg(0).unwrap_or(0);
    let gil_cond = gil_addr(GIL_ADDR_COND);
    // Until userspace has found the GIL (`-- CMD`, the first milliseconds), any timed wait of a
    // thread inside take_gil is taken for the GIL's: take_gil makes no other.
    if gil_cond != 0 && cond != gil_cond {
        return 0;
    }
    let tid = current_tid();
    let Some(st) = THREADS.get_ptr_mut(&tid) else {
        return 0;
    };
    // SAFETY: this thread's own entry; only this thread writes it.
    unsafe {
        if (*st).take_start_ns != 0 {
            // Waiting, so not holding: open-span accounting (collect.rs) reads this as a wait.
            (*st).hold_start_ns = 0;
            crate::handoff::wait_began(tid);
        }
    }
    0
}

/// `pthread_cond_timedwait` return: the thread woke up holding gil->mutex, and takes the GIL
/// now unless another thread got it first (then it waits again, and this is overwritten).
#[uretprobe]
pub fn gil_cond_wait_return(ctx: RetProbeContext) -> u32 {
    let tid = current_tid();
    let Some(st) = THREADS.get_ptr_mut(&tid) else {
        return 0;
    };
    // SAFETY: this thread's own entry; only this thread writes it.
    unsafe {
        // take set, hold cleared: exactly the state gil_cond_wait_enter leaves.
        if (*st).take_start_ns != 0 && (*st).hold_start_ns == 0 {
            (*st).hold_start_ns = now_ns();
            crate::handoff::wait_ended(tid, ctx.ret::<i64>() as i32 as i64);
        }
        crate::blame::timed_wait_returned(
            ctx.ret::<i64>() as i32,
            tid,
            (*st).take_start_ns,
            (*st).tstate,
        );
    }
    0
}
