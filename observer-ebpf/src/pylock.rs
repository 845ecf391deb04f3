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
//! The hot path, an uncontended `with lock:`, is `sem_trywait` then `sem_post`: two entry probes,
//! no return probe (a return probe needs a trap at the function's first instruction, which in
//! glibc's `sem_trywait` is single-stepped, 25 times the cost). A try's outcome is learned from
//! what comes next: a blocking wait on the same lock by the same thread means it failed (the
//! wait continues); a `sem_post` on the lock, or the thread's next lock call, means it succeeded
//! if the lock was free when it tried (a tentative hold was recorded), else it found it taken.
//! The blocking calls keep their return probe (they are the contended path, and may time out).
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
    MUTEX_OP_PY_TRY, MUTEX_OP_PY_WAIT, MUTEX_PY_PAIR, MutexHeld, MutexPending, MutexStatKind,
    PY_LOCK_COOKIE_BLOCKING,
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

/// The lock's hold, or a tentative one (a try whose outcome is not known yet).
#[inline(always)]
fn set_held(addr: u64, holder: u32, start_ns: u64, tentative: bool) {
    let h = MutexHeld {
        start_ns,
        depth: 1,
        holder,
        acquiring: u32::from(tentative),
        ..Default::default()
    };
    if MUTEX_HELD.insert(&key(addr, 0, 0), &h, 0).is_err() {
        count_error(MUTEX_ERR_STATE_FULL);
    }
}

/// A try of this thread's that nothing followed on its lock: it had the lock if it left a
/// tentative hold (which now stands), else it found the lock taken.
#[inline(always)]
fn settle_try(p: &MutexPending, tid: u32) {
    if let Some(h) = MUTEX_HELD.get_ptr_mut(&key(p.addr, 0, 0)) {
        // SAFETY: a map value; only the lock's holder (or tentative holder) changes it.
        unsafe {
            if (*h).holder == tid && (*h).acquiring != 0 {
                (*h).acquiring = 0;
                acquired(p.addr, tid, 0, 0, 0);
                return;
            }
        }
    }
    busy(p.addr, tid);
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
    let now = now_ns();
    if let Some(pp) = MUTEX_PENDING.get_ptr_mut(&pk) {
        // SAFETY: this thread's own entry.
        let prev = unsafe { *pp };
        if prev.op == MUTEX_OP_PY_TRY {
            if !blocking && prev.addr == addr {
                // The same try's probe again (sem_trywait retries its compare-and-swap past
                // the probed branch), or a try on a lock this thread took with a try: counted
                // once, the second as nothing (it could only find the lock busy).
                return 0;
            }
            if blocking && prev.addr == addr {
                // The try failed: this wait is the rest of the same acquisition. A tentative
                // hold the try left is void.
                let hk = key(addr, 0, 0);
                if let Some(h) = MUTEX_HELD.get_ptr(&hk) {
                    // SAFETY: a map value, read once.
                    let (holder, tentative) = unsafe { ((*h).holder, (*h).acquiring) };
                    if holder == tid && tentative != 0 {
                        let _ = MUTEX_HELD.remove(&hk);
                    }
                }
                // SAFETY: as above.
                unsafe {
                    (*pp).op = MUTEX_OP_PY_WAIT;
                    (*pp).contended = 1;
                }
                return 0;
            }
            settle_try(&prev, tid);
        }
    }
    if !blocking && MUTEX_HELD.get_ptr(&key(addr, 0, 0)).is_none() {
        // Free as far as we know: tentatively, this try has it from now.
        set_held(addr, tid, now, true);
    }
    let p = MutexPending {
        addr,
        start_ns: now,
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

/// The blocking waits' return: 0 is the lock had, -1 a timeout or an interruption.
#[uretprobe]
pub fn pylock_acquire_return(ctx: RetProbeContext) -> u32 {
    if !armed() {
        return 0;
    }
    let ret = ctx.ret::<i64>() as i32;
    let tid = tid();
    let pk = key(0, tid, SLOT_PY);
    let Some(pp) = MUTEX_PENDING.get_ptr(&pk) else {
        return 0;
    };
    // SAFETY: this thread's own entry, copied out before it is removed.
    let p = unsafe { *pp };
    if p.op != MUTEX_OP_PY_WAIT {
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
    set_held(p.addr, tid, now, false);
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
    let tid = tid();
    let now = now_ns();
    let hk = key(addr, 0, 0);
    // This thread's own try on this lock, still unresolved: it had the lock, since it releases it
    // (when a stale hold made the try look busy, that hold is replaced).
    let pk = key(0, tid, SLOT_PY);
    let mut own_try_start = 0;
    if let Some(pp) = MUTEX_PENDING.get_ptr(&pk) {
        // SAFETY: this thread's own entry.
        let p = unsafe { *pp };
        if p.op == MUTEX_OP_PY_TRY && p.addr == addr {
            own_try_start = p.start_ns;
            let _ = MUTEX_PENDING.remove(&pk);
        }
    }
    let Some(h) = MUTEX_HELD.get_ptr(&hk) else {
        if own_try_start != 0 {
            acquired(addr, tid, 0, 0, 0);
            record(
                addr,
                tid,
                MutexStatKind::Hold,
                now.saturating_sub(own_try_start),
            );
        }
        return 0; // else taken before the probes were in place
    };
    // SAFETY: a map value, copied before it is removed; one lock has one holder at a time.
    let st = unsafe { *h };
    // Removed rather than kept: Condition waiter locks are a new semaphore each time.
    let _ = MUTEX_HELD.remove(&hk);
    let (holder, start) = if own_try_start != 0 && st.holder != tid {
        acquired(addr, tid, 0, 0, 0);
        (tid, own_try_start)
    } else {
        if st.acquiring != 0 {
            // A tentative hold: its try had the lock.
            acquired(addr, st.holder, 0, 0, 0);
            if st.holder != tid {
                // Released by another thread: the holder's try is settled here.
                let hp = key(0, st.holder, SLOT_PY);
                if let Some(pp) = MUTEX_PENDING.get_ptr(&hp) {
                    // SAFETY: another thread's entry, read once; at worst it has moved on and
                    // this removes nothing that matters.
                    let (op, a) = unsafe { ((*pp).op, (*pp).addr) };
                    if op == MUTEX_OP_PY_TRY && a == addr {
                        let _ = MUTEX_PENDING.remove(&hp);
                    }
                }
            }
        }
        (st.holder, st.start_ns)
    };
    if start != 0 {
        record(addr, holder, MutexStatKind::Hold, now.saturating_sub(start));
    }
    0
}
