//! The names of the kernel programs and maps: what userspace loads, attaches and reads them by.
//!
//! aya names a program after its function (`#[uprobe] pub fn take_gil_enter_arg0`) and a map
//! after its static (`#[map] static STATS`), so observer-ebpf cannot take these constants: its
//! functions and statics are named as they say. A unit test on the userspace side
//! (observer/src/probe/attach.rs) opens the embedded BPF object and checks that the two lists
//! here and the object's programs and maps are the same, so a rename on either side fails
//! `cargo test` instead of a run.

/// Declares each name as a constant and lists them all in `ALL`, so that none escapes the check.
macro_rules! names {
    ($($(#[$attr:meta])* $constant:ident = $name:literal;)*) => {
        $($(#[$attr])* pub const $constant: &str = $name;)*
        /// Every name above.
        pub const ALL: &[&str] = &[$($constant),*];
    };
}

/// Programs (observer-ebpf: `main.rs` and the module each names).
pub mod program {
    names! {
        /// take_gil(tstate) entry, three-trap design (3.6/3.7).
        TAKE_GIL_ENTER_ARG0 = "take_gil_enter_arg0";
        /// take_gil(ceval, tstate) entry, three-trap design (3.8's out-of-line original).
        TAKE_GIL_ENTER_ARG1 = "take_gil_enter_arg1";
        /// take_gil(tstate) entry, two-trap design: the wait starts, and the hold tentatively.
        TAKE_GIL_TENTATIVE_ARG0 = "take_gil_tentative_arg0";
        /// The same for 3.8's take_gil(ceval, tstate).
        TAKE_GIL_TENTATIVE_ARG1 = "take_gil_tentative_arg1";
        /// take_gil's return (a uretprobe), three-trap design.
        TAKE_GIL_RETURN = "take_gil_return";
        /// drop_gil's entry.
        DROP_GIL_ENTER = "drop_gil_enter";
        /// `pthread_cond_signal(&gil->cond)` of an inlined drop_gil (gil_cond_signal_drop.rs).
        GIL_COND_SIGNAL_DROP = "gil_cond_signal_drop";
        /// The GIL's timed wait in libc, entry and return (gil_cond_wait.rs).
        GIL_COND_WAIT_ENTER = "gil_cond_wait_enter";
        GIL_COND_WAIT_RETURN = "gil_cond_wait_return";
        /// libc strategy: pthread_mutex_lock and pthread_cond_signal on the GIL (gil_libc.rs).
        GIL_MUTEX_LOCK = "gil_mutex_lock";
        GIL_COND_SIGNAL = "gil_cond_signal";
        /// Named mutexes (mutex.rs): pthread lock calls, their return, unlock, condition waits.
        MUTEX_LOCK_ENTER = "mutex_lock_enter";
        MUTEX_TRYLOCK_ENTER = "mutex_trylock_enter";
        MUTEX_TIMEDLOCK_ENTER = "mutex_timedlock_enter";
        MUTEX_LOCK_RETURN = "mutex_lock_return";
        MUTEX_UNLOCK_ENTER = "mutex_unlock_enter";
        COND_WAIT_ENTER = "cond_wait_enter";
        /// Custom lock functions (`--lock-fns`).
        LOCKFN_ACQUIRE_ENTER = "lockfn_acquire_enter";
        LOCKFN_ACQUIRE_RETURN = "lockfn_acquire_return";
        LOCKFN_RELEASE_ENTER = "lockfn_release_enter";
        /// Python locks (`--py-locks`): libc's semaphore waits (entry, return) and `sem_post`.
        PYLOCK_ACQUIRE_ENTER = "pylock_acquire_enter";
        PYLOCK_ACQUIRE_RETURN = "pylock_acquire_return";
        PYLOCK_RELEASE_ENTER = "pylock_release_enter";
        /// Raw tracepoints on sys_enter and sys_exit: a lock call's futex wait and wake-up.
        MUTEX_FUTEX = "mutex_futex";
        MUTEX_FUTEX_EXIT = "mutex_futex_exit";
        /// Per-site trap counters (site_hits.rs): a probed instruction, a uretprobe's returns.
        SITE_HIT = "site_hit";
        SITE_RETURN_HIT = "site_return_hit";
        /// sched_switch raw tracepoint: the GIL's holder switched out and back in (offcpu.rs).
        GIL_OFFCPU_SWITCH = "gil_offcpu_switch";
    }
}

/// The kernel's `--trace` switch, a global in `.rodata` set at load.
pub const TRACE_ON: &str = "TRACE_ON";

/// Maps.
pub mod map {
    names! {
        /// (tid, kind) → GIL wait or hold distribution.
        STATS = "STATS";
        /// tid → what the thread is doing with the GIL now.
        THREADS = "THREADS";
        /// tgid → when the GIL was last released (kernel only).
        LAST_DROP = "LAST_DROP";
        /// tid → tgid of every thread tracked (several processes in one run).
        THREAD_TGID = "THREAD_TGID";
        /// GIL events that could not be recorded, by cause.
        ERRORS = "ERRORS";
        /// tgid → the GIL's addresses, for the programs that filter by them.
        GIL_ADDRS = "GIL_ADDRS";
        /// An empty histogram to insert from (kernel only).
        ZERO_HIST = "ZERO_HIST";
        /// Trap counts per probed site.
        SITE_HITS = "SITE_HITS";
        /// Named mutexes.
        MUTEX_STATS = "MUTEX_STATS";
        MUTEX_COUNTS = "MUTEX_COUNTS";
        MUTEX_HELD = "MUTEX_HELD";
        MUTEX_PENDING = "MUTEX_PENDING";
        MUTEX_WATCH = "MUTEX_WATCH";
        MUTEX_CONFIG = "MUTEX_CONFIG";
        MUTEX_STACKS = "MUTEX_STACKS";
        MUTEX_SITES = "MUTEX_SITES";
        MUTEX_ERRORS = "MUTEX_ERRORS";
        /// Blame (blame.rs): the frame-walk offsets, a per-CPU stack being built, stacks by id,
        /// (holder tstate, stack) and (waiter tid, stack) totals, the hold being sampled, the
        /// waits that timed out, and the blame error counters.
        BLAME_CONFIG = "BLAME_CONFIG";
        BLAME_SCRATCH = "BLAME_SCRATCH";
        BLAME_STACKS = "BLAME_STACKS";
        BLAME_HOLDS = "BLAME_HOLDS";
        BLAME_WAITS = "BLAME_WAITS";
        BLAME_HOLDER = "BLAME_HOLDER";
        BLAME_WAITING = "BLAME_WAITING";
        BLAME_ERRORS = "BLAME_ERRORS";
        /// Why the GIL changed hands (handoff.rs): the GIL's `locked` address, the state
        /// between drops, per-thread drop kinds, the handoff matrix, the histograms.
        HANDOFF_CFG = "HANDOFF_CFG";
        HANDOFF_STATE = "HANDOFF_STATE";
        HANDOFF_THREADS = "HANDOFF_THREADS";
        HANDOFF_PAIRS = "HANDOFF_PAIRS";
        HANDOFF_HIST = "HANDOFF_HIST";
        /// GIL held off-CPU (offcpu.rs): the target and the holder switched out.
        OFFCPU = "OFFCPU";
        /// `--trace`: GIL span records, and the records lost to a full ring buffer.
        TRACE_EVENTS = "TRACE_EVENTS";
        TRACE_LOST = "TRACE_LOST";
    }
}
