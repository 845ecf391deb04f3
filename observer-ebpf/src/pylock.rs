//! Kernel programs for Python locks (`--py-locks`): CPython 3.8–3.12 on Linux builds every
//! `PyThread_type_lock` (the lock inside `threading.Lock`, `RLock`, and so inside `Condition`,
//! `Semaphore`, `Event`, `queue.Queue`) on a POSIX semaphore, and the `PyThread_type_lock` *is*
//! the `sem_t*`. libc's semaphore calls are probed rather than CPython's own
//! `PyThread_acquire_lock_timed`/`PyThread_release_lock`, which LTO builds (Debian's) inline
//! into `threading.Lock`'s methods: libc is a separate object, so its calls survive any build.
//!
//! `acquire_timed` first tries without blocking (`sem_trywait`, GIL held), then, when the lock is
//! taken, waits with the GIL released (`sem_wait`, or the timed variants): the two calls are one
//! acquisition whose wait runs from the try's entry to the blocking call's return. The hold runs
//! from there to the `sem_post` entry, whichever thread posts: holds are kept per lock (tid 0 in
//! the key) with the holder's tid, and recorded for the holder.
//!
//! The statistics land in the named-mutex maps (mutex.rs) under the lock's address tagged as a
//! custom instance of pair `MUTEX_PY_PAIR`, so the lock report reads them like any other lock.

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_get_attach_cookie,
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use observer_common::{
    MUTEX_CUSTOM_ADDR_MASK, MUTEX_CUSTOM_PAIR_SHIFT, MUTEX_CUSTOM_TAG, MUTEX_ERR_STATE_FULL,
    MUTEX_OP_PY_TRIED, MUTEX_OP_PY_TRY, MUTEX_OP_PY_WAIT, MUTEX_PY_PAIR, MutexHeld, MutexPending,
    MutexStatKind, PY_LOCK_COOKIE_BLOCKING,
};

use crate::mutex::{
    MUTEX_HELD, MUTEX_PENDING, SLOT_PY, acquired, armed, count_error, counts, key, now_ns, record,
    tid,
};

/// The key of a semaphore: tagged, so it never meets a pthread mutex's or a custom lock's entries.
#[inline(always)]
fn py_addr(sem: u64) -> u64 {
    if sem == 0 {
        return 0;
    }
    (sem & MUTEX_CUSTOM_ADDR_MASK) | MUTEX_CUSTOM_TAG | (MUTEX_PY_PAIR << MUTEX_CUSTOM_PAIR_SHIFT)
}

/// A try that found the lock taken and was not followed by a wait on it: `acquire(blocking=False)`.
#[inline(always)]
fn busy(addr: u64, tid: u32) {
    if let Some(c) = counts(addr, tid) {
        // SAFETY: this thread's own entry.
        unsafe { (*c).trylock_busy += 1 };
    }
}

/// `sem_trywait` (cookie 0) and `sem_wait`/`sem_timedwait`/`sem_clockwait` (cookie 1): entry.
#[uprobe]
pub fn pylock_acquire_enter(ctx: ProbeContext) -> u32 {
    if !armed() {
        return 0;
    }
    let addr = py_addr(ctx.arg::<u64>(0).unwrap_or(0));
    if addr == 0 {
        return 0;
    }
    // SAFETY: the helper only reads the cookie of the current attachment.
    let blocking = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } == PY_LOCK_COOKIE_BLOCKING;
    let tid = tid();
    let pk = key(0, tid, SLOT_PY);
    if let Some(p) = MUTEX_PENDING.get_ptr_mut(&pk) {
        // SAFETY: this thread's own entry.
        let prev = unsafe { *p };
        if prev.op == MUTEX_OP_PY_TRIED {
            if blocking && prev.addr == addr {
                // The blocking half of the same acquisition: its wait started at the try.
                // SAFETY: as above.
                unsafe {
                    (*p).op = MUTEX_OP_PY_WAIT;
                    (*p).contended = 1;
                }
                return 0;
            }
            busy(prev.addr, tid);
        }
    }
    let p = MutexPending {
        addr,
        start_ns: now_ns(),
        caller: 0,
        op: if blocking {
            MUTEX_OP_PY_WAIT
        } else {
            MUTEX_OP_PY_TRY
        },
        contended: 0,
    };
    if MUTEX_PENDING.insert(&pk, &p, 0).is_err() {
        count_error(MUTEX_ERR_STATE_FULL);
    }
    0
}

/// The semaphore calls' return: 0 is the lock had, -1 a try that found it taken, a timeout or
/// an interruption.
#[uretprobe]
pub fn pylock_acquire_return(ctx: RetProbeContext) -> u32 {
    if !armed() {
        return 0;
    }
    let ret = ctx.ret::<i64>() as i32;
    let tid = tid();
    let pk = key(0, tid, SLOT_PY);
    let Some(pp) = MUTEX_PENDING.get_ptr_mut(&pk) else {
        return 0;
    };
    // SAFETY: this thread's own entry, copied out before it is changed or removed.
    let p = unsafe { *pp };
    if ret != 0 && p.op == MUTEX_OP_PY_TRY {
        // Kept: a blocking wait on the same lock may follow.
        // SAFETY: as above.
        unsafe { (*pp).op = MUTEX_OP_PY_TRIED };
        return 0;
    }
    if p.op != MUTEX_OP_PY_TRY && p.op != MUTEX_OP_PY_WAIT {
        return 0;
    }
    let _ = MUTEX_PENDING.remove(&pk);
    let now = now_ns();
    let waited = now.saturating_sub(p.start_ns);
    if ret != 0 {
        if let Some(c) = counts(p.addr, tid) {
            // SAFETY: this thread's own entry.
            unsafe { (*c).failed += 1 };
        }
        record(p.addr, tid, MutexStatKind::FailedWait, waited);
        return 0;
    }
    acquired(p.addr, tid, waited, p.contended, 0);
    let h = MutexHeld {
        start_ns: now,
        depth: 1,
        holder: tid,
        ..Default::default()
    };
    if MUTEX_HELD.insert(&key(p.addr, 0, 0), &h, 0).is_err() {
        count_error(MUTEX_ERR_STATE_FULL);
    }
    0
}

/// `sem_post`: the hold ends, for the thread that took the lock.
#[uprobe]
pub fn pylock_release_enter(ctx: ProbeContext) -> u32 {
    if !armed() {
        return 0;
    }
    let addr = py_addr(ctx.arg::<u64>(0).unwrap_or(0));
    if addr == 0 {
        return 0;
    }
    let k = key(addr, 0, 0);
    let Some(h) = MUTEX_HELD.get_ptr(&k) else {
        return 0; // taken before the probes were in place, or not a lock being tracked
    };
    // SAFETY: a map value, copied before it is removed; one lock has one holder at a time.
    let st = unsafe { *h };
    // Removed rather than kept: Condition waiter locks are a new semaphore each time.
    let _ = MUTEX_HELD.remove(&k);
    if st.start_ns != 0 {
        record(
            addr,
            st.holder,
            MutexStatKind::Hold,
            now_ns().saturating_sub(st.start_ns),
        );
    }
    0
}
