//! GIL held while not running: the holder switched out by the kernel (a blocking call or
//! `sleep` in C code that did not release the GIL, a page fault, CPU starvation, cgroup
//! throttling), and how long until it ran again, blocked or runnable.
//!
//! One raw tracepoint on `sched_switch`, which runs on every context switch of the host, so the
//! common path is two cheap tests and one array lookup: the outgoing task is the current one
//! (its tgid is compared first), the incoming one is compared by its `task_struct*` with the
//! one holder switched out (the GIL has one holder, so one slot). Only a target thread that
//! holds the GIL by our books costs more: its THREADS entry, and `gil->last_holder` and
//! `gil->locked` read from its own memory to confirm it is the holder and not a thread still
//! inside take_gil.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_user},
    macros::{map, raw_tracepoint},
    maps::Array,
    programs::RawTracePointContext,
};
use observer_common::{HANDOFF_HIST_OFFCPU_BLOCKED, HANDOFF_HIST_OFFCPU_RUNNABLE, OffCpuState};

use crate::{
    THREADS,
    handoff::{HANDOFF_HIST, gil_locked_addr, thread_entry},
    histogram, now_ns,
};

/// The target (tgid, written by userspace) and the holder switched out now.
#[map]
static OFFCPU: Array<OffCpuState> = Array::with_max_entries(1, 0);

/// sched_switch(bool preempt, task_struct *prev, task_struct *next, unsigned int prev_state),
/// in the context of `prev`.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn gil_offcpu_switch(ctx: RawTracePointContext) -> i32 {
    let Some(s) = OFFCPU.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the one slot; its span fields are written by the holder's switch-out and
    // cleared at its switch-in, which the scheduler orders.
    let s = unsafe { &mut *s };
    if s.tgid == 0 {
        return 0;
    }
    let next: u64 = ctx.arg(2);
    if s.task != 0 && next == s.task {
        switched_in(s);
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid >> 32 == s.tgid {
        let preempt: u64 = ctx.arg(0);
        let state: u64 = ctx.arg(3);
        switched_out(s, pid_tgid as u32, preempt & 1 == 0 && state as u32 != 0);
    }
    0
}

#[inline(always)]
fn switched_out(s: &mut OffCpuState, tid: u32, blocked: bool) {
    let Some(st) = THREADS.get_ptr(&tid) else {
        return;
    };
    // SAFETY: a read of the thread's entry, which only it writes, and it is not running now.
    let (hold, tstate) = unsafe { ((*st).hold_start_ns, (*st).tstate) };
    if hold == 0 {
        return;
    }
    let locked = gil_locked_addr();
    if locked != 0 && tstate != 0 {
        // A hold by our books may still be a take in progress (take_gil's entry starts it
        // tentatively): the GIL says who holds it.
        // SAFETY: bpf_probe_read_user checks the address; this is the current task's memory.
        let holder = unsafe { bpf_probe_read_user((locked - 8) as *const u64) }.unwrap_or(0);
        // SAFETY: as above.
        let is_locked = unsafe { bpf_probe_read_user(locked as *const i32) }.unwrap_or(0) > 0;
        if holder != tstate || !is_locked {
            return;
        }
    }
    // SAFETY: a helper with no preconditions.
    s.task = unsafe { bpf_get_current_task() };
    s.start_ns = now_ns();
    s.tid = tid;
    s.blocked = blocked as u32;
}

#[inline(always)]
fn switched_in(s: &mut OffCpuState) {
    let ns = now_ns().saturating_sub(s.start_ns);
    let tid = s.tid;
    let blocked = s.blocked != 0;
    s.task = 0;
    let which = if blocked {
        HANDOFF_HIST_OFFCPU_BLOCKED
    } else {
        HANDOFF_HIST_OFFCPU_RUNNABLE
    };
    let _ = histogram::add(&HANDOFF_HIST, &which, ns);
    // The thread's handoff entry (its other fields are written by the thread itself).
    let Some(t) = thread_entry(tid) else { return };
    // SAFETY: written only here, for the one holder switched out at a time.
    unsafe {
        if blocked {
            (*t).offcpu_blocked_count += 1;
            (*t).offcpu_blocked_ns += ns;
        } else {
            (*t).offcpu_runnable_count += 1;
            (*t).offcpu_runnable_ns += ns;
        }
    }
}
