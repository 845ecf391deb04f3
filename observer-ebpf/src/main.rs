//! Kernel programs: per-thread GIL wait and hold, aggregated into histograms in a map.
//!
//! Two designs for interpreters with symbols (see gil/plan.rs for which runs where):
//! - two traps per GIL cycle (`gil_cond_wait`): take_gil entry starts the wait *and* tentatively
//!   the hold, because an uncontended take has the GIL at once; only a contended take blocks in
//!   `pthread_cond_timedwait(&gil->cond)`, whose return moves the hold start to when the waiter
//!   woke up (the last wake-up before drop_gil is the acquisition). drop_gil entry then records
//!   both the wait and the hold, the acquisition being the latest of: take_gil entry, the last
//!   wake-up, and the previous holder's drop (LAST_DROP). No uretprobe on the hot path.
//! - three traps (3.6/3.7, whose GIL gilwatch cannot locate in memory): take_gil entry, take_gil
//!   return (a uretprobe) and drop_gil entry.
//!
//! Each thread only ever updates its own entries, so no atomics are needed: one thread never runs
//! on two CPUs at once.
//!
//! Userspace loads programs and maps by name: every `#[uprobe]`/`#[uretprobe]`/`#[raw_tracepoint]`
//! function and `#[map]` static is listed in observer-common/src/names.rs, and a userspace unit test
//! (observer/src/probe/attach.rs) fails when the two disagree.
#![no_std]
#![no_main]

/// Named mutexes (`--lock`, `--lock-fns`, `--mutexes`): their own programs and maps.
mod mutex;
/// Python locks (`--py-locks`): libc semaphore calls, into the named-mutex maps.
mod pylock;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};
/// Which Python code held the GIL while others timed out waiting, and which code waited.
mod blame;
mod gil_cond_signal_drop;
mod gil_cond_wait;
mod gil_libc;
mod handoff;
mod histogram;
mod offcpu;
mod site_hits;
/// `--trace`: per-span records into a ring buffer, only while tracing.
mod trace;

use observer_common::{
    ERR_COUNTERS, ERR_STATS_MAP_FULL, ERR_THREADS_MAP_FULL, Histogram, MAX_PROCESSES, MAX_STATS,
    MAX_THREADS, StatKey, StatKind, ThreadGilState,
};

/// Hash maps that allocate entries as they are inserted (BPF_F_NO_PREALLOC): kernel memory grows
/// with the threads observed instead of a fixed ceiling (a histogram is 4 KiB).
pub(crate) const NO_PREALLOC: u32 = 1;

/// (tid, kind) → distribution. Read (never cleared) by userspace.
#[map]
static STATS: HashMap<StatKey, Histogram> = HashMap::with_max_entries(MAX_STATS, NO_PREALLOC);

/// tid → what the thread is doing now. Not an LRU map: an eviction would silently drop a live
/// thread's state, where a full map fails the insert and is counted. Userspace removes the
/// entries of threads that exited (probe/attach.rs, `forget_exited_threads`).
#[map]
pub(crate) static THREADS: HashMap<u32, ThreadGilState> =
    HashMap::with_max_entries(MAX_THREADS, NO_PREALLOC);

/// When the GIL was last released (drop_gil entry, any thread): a thread that found the GIL free
/// without waiting on its condition variable took it no earlier than this. This matters when the
/// thread was preempted between entering take_gil and looking at the GIL: the time until the
/// holder let go was a wait, not part of its hold.
/// Keyed by tgid: each observed process has its own GIL.
#[map]
static LAST_DROP: HashMap<u32, u64> = HashMap::with_max_entries(MAX_PROCESSES, 0);

/// tid → tgid of every thread tracked: STATS is keyed by thread, and a run that observes several
/// processes tells their threads apart by this, even after a thread (or its process) exited.
/// Written once per thread (its first GIL event), removed by userspace with the thread's numbers.
#[map]
static THREAD_TGID: HashMap<u32, u32> = HashMap::with_max_entries(MAX_THREADS, NO_PREALLOC);

/// Events we could not record, by cause (ERR_*): reported so a full map is never silent.
#[map]
static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ERR_COUNTERS, 0);

#[inline(always)]
pub(crate) fn current_tid() -> u32 {
    // The low half of pid_tgid is the thread id.
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
pub(crate) fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: a helper with no arguments and no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn count_error(which: u32) {
    if let Some(c) = ERRORS.get_ptr_mut(which) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub(crate) fn record(tid: u32, kind: StatKind, ns: u64) {
    let key = StatKey {
        tid,
        kind: kind as u32,
    };
    if histogram::add(&STATS, &key, ns).is_err() {
        count_error(ERR_STATS_MAP_FULL);
    }
}

#[inline(always)]
fn take_enter(tstate: u64, tentative_hold: bool) {
    let tid = current_tid();
    let now = now_ns();
    track_thread(
        tid,
        ThreadGilState {
            take_start_ns: now,
            // With the two-trap design nothing marks the acquisition of an uncontended take:
            // it is now, give or take the GIL mutex (nanoseconds). A contended take moves it.
            hold_start_ns: if tentative_hold { now } else { 0 },
            tstate,
        },
    );
}

/// Starts tracking a thread (or resets its state).
#[inline(always)]
pub(crate) fn track_thread(tid: u32, st: ThreadGilState) {
    // In place when the thread is known: an insert into a map that allocates as used would
    // allocate a new entry and free the old one on every GIL cycle.
    if let Some(p) = THREADS.get_ptr_mut(&tid) {
        // SAFETY: this thread's own entry; only this thread writes it.
        unsafe { *p = st };
        return;
    }
    if THREADS.insert(&tid, &st, 0).is_err() {
        count_error(ERR_THREADS_MAP_FULL);
        return;
    }
    // First sight of the thread (or again after userspace forgot its state): a full map here
    // only loses which process the thread belongs to, which the THREADS count above covers.
    let _ = THREAD_TGID.insert(&tid, &current_tgid(), 0);
}

/// take_gil(tstate): 3.6–3.7, 3.9+, and 3.8's `take_gil.constprop.*` clone.
#[uprobe]
pub fn take_gil_enter_arg0(ctx: ProbeContext) -> u32 {
    take_enter(ctx.arg::<u64>(0).unwrap_or(0), false);
    0
}

/// take_gil(ceval, tstate): 3.8's out-of-line original.
#[uprobe]
pub fn take_gil_enter_arg1(ctx: ProbeContext) -> u32 {
    take_enter(ctx.arg::<u64>(1).unwrap_or(0), false);
    0
}

/// Two-trap design, take_gil(tstate): the wait starts, and the hold tentatively too.
#[uprobe]
pub fn take_gil_tentative_arg0(ctx: ProbeContext) -> u32 {
    take_enter(ctx.arg::<u64>(0).unwrap_or(0), true);
    0
}

/// Two-trap design, 3.8's take_gil(ceval, tstate).
#[uprobe]
pub fn take_gil_tentative_arg1(ctx: ProbeContext) -> u32 {
    take_enter(ctx.arg::<u64>(1).unwrap_or(0), true);
    0
}

#[uretprobe]
pub fn take_gil_return(_ctx: RetProbeContext) -> u32 {
    let tid = current_tid();
    let Some(st) = THREADS.get_ptr_mut(&tid) else {
        return 0;
    };
    let now = now_ns();
    // SAFETY: this thread's own entry.
    let start = unsafe { (*st).take_start_ns };
    if start == 0 {
        // The call began before we attached; its wait is unknown.
        return 0;
    }
    // SAFETY: as above.
    unsafe {
        (*st).take_start_ns = 0;
        (*st).hold_start_ns = now;
    }
    record(tid, StatKind::Wait, now - start);
    handoff::acquired(tid, now - start, now);
    trace::span(tid, start, now, 0);
    0
}

/// Ends a hold. With the two-trap design the wait that preceded it is recorded here too: its
/// end (the hold's start) was only final once the thread stopped waking up in take_gil.
#[uprobe]
pub fn drop_gil_enter(_ctx: ProbeContext) -> u32 {
    gil_dropped(current_tid());
    0
}

/// The GIL was dropped by thread `tid` (drop_gil's entry, or the `pthread_cond_signal(&gil->cond)`
/// of an inlined drop_gil): records the hold and, two-trap design, the wait before it.
#[inline(always)]
pub(crate) fn gil_dropped(tid: u32) {
    let Some(st) = THREADS.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: this thread's own entry.
    let (take, hold, tstate) = unsafe { ((*st).take_start_ns, (*st).hold_start_ns, (*st).tstate) };
    if hold == 0 {
        // Not a hold we saw begin: the GIL was taken before we attached, or take_gil is dropping
        // it on a thread's way out during finalization.
        return;
    }
    let now = now_ns();
    // SAFETY: as above.
    unsafe {
        (*st).take_start_ns = 0;
        (*st).hold_start_ns = 0;
    }
    let mut acquired = hold;
    let tgid = current_tgid();
    if let Some(last) = LAST_DROP.get_ptr_mut(&tgid) {
        // SAFETY: this process's slot; a racing drop by another thread (another interpreter's
        // GIL) can only make this later, which the max below tolerates.
        unsafe {
            if take != 0 && *last > acquired && *last < now {
                acquired = *last;
            }
            *last = now;
        }
    } else {
        // The process's first drop seen: nothing before it to compare with.
        let _ = LAST_DROP.insert(&tgid, &now, 0);
    }
    if take != 0 {
        record(tid, StatKind::Wait, acquired.saturating_sub(take));
    }
    record(tid, StatKind::Hold, now.saturating_sub(acquired));
    blame::hold_ended(tstate, acquired, now);
    handoff::on_drop(tid, take, acquired, now);
    trace::span(tid, take, acquired, now);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
