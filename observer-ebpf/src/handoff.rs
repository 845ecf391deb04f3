//! Why the GIL changed hands: forced and voluntary drops, the handoff matrix, and the latency
//! from a forced drop to the next acquisition.
//!
//! CPython's forced switch: a waiter's timed wait on `gil->cond` expires (ETIMEDOUT); if the GIL
//! is still locked and `switch_number` has not moved since the wait began, the waiter sets the
//! drop request and the holder drops at its next eval-breaker check. We mirror that test at the
//! wait's return (reading `locked` and `switch_number` from the target, which the waiter holds
//! `gil->mutex` for) and note the request's time. A drop is *forced* when a request was made
//! during the hold it ends (after its acquisition): one global slot, not a per-holder mark,
//! because the GIL has one holder at a time and CPython itself keeps one request flag, which
//! the next take clears.
//!
//! Every update here happens in a drop or an acquisition, which the GIL serialises, or in a
//! waiter's timed-wait return, which holds `gil->mutex`: plain (non-atomic) updates suffice.
//! A request made in the instant the holder enters drop_gil may be missed (counted voluntary).
use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::map,
    maps::{Array, HashMap},
};
use observer_common::{
    HANDOFF_CFG_LOCKED, HANDOFF_CFG_SLOTS, HANDOFF_HIST_FORCED_LATENCY, HANDOFF_HISTS, HandoffKey,
    HandoffPair, HandoffState, Histogram, MAX_HANDOFF_PAIRS, MAX_THREADS, ThreadHandoff,
};

use crate::{NO_PREALLOC, histogram, now_ns};

/// `pthread_cond_timedwait`'s return value when the timeout expired.
const ETIMEDOUT: i64 = 110;
/// Insert only if the key is absent: a thread's entry may be created by itself and by the
/// thread that takes a GIL it asked for, and neither must reset the other's counts.
const BPF_NOEXIST: u64 = 1;

/// The GIL's `locked` field address (slot HANDOFF_CFG_LOCKED), 0 until userspace found the GIL.
#[map]
static HANDOFF_CFG: Array<u64> = Array::with_max_entries(HANDOFF_CFG_SLOTS, 0);

#[map]
static HANDOFF_STATE: Array<HandoffState> = Array::with_max_entries(1, 0);

/// tid → forced/voluntary drops, drop requests, off-CPU holds (offcpu.rs).
#[map]
static HANDOFF_THREADS: HashMap<u32, ThreadHandoff> =
    HashMap::with_max_entries(MAX_THREADS, NO_PREALLOC);

/// (last dropper, taker) → acquisitions and the taker's summed wait.
#[map]
static HANDOFF_PAIRS: HashMap<HandoffKey, HandoffPair> =
    HashMap::with_max_entries(MAX_HANDOFF_PAIRS, NO_PREALLOC);

/// HANDOFF_HIST_* → distribution (shared with offcpu.rs).
#[map]
pub(crate) static HANDOFF_HIST: HashMap<u32, Histogram> =
    HashMap::with_max_entries(HANDOFF_HISTS, 0);

#[inline(always)]
pub(crate) fn gil_locked_addr() -> u64 {
    HANDOFF_CFG.get(HANDOFF_CFG_LOCKED).copied().unwrap_or(0)
}

#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user checks the address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_user(addr as *const T).ok() }
}

#[inline(always)]
pub(crate) fn thread_entry(tid: u32) -> Option<*mut ThreadHandoff> {
    if let Some(p) = HANDOFF_THREADS.get_ptr_mut(&tid) {
        return Some(p);
    }
    // A full map loses this thread's counts; the GIL's own THREADS map would be full first.
    let _ = HANDOFF_THREADS.insert(&tid, &ThreadHandoff::default(), BPF_NOEXIST);
    HANDOFF_THREADS.get_ptr_mut(&tid)
}

/// A thread inside take_gil begins a timed wait on the GIL's condition: note `switch_number`.
#[inline(always)]
pub(crate) fn wait_began(tid: u32) {
    let locked = gil_locked_addr();
    if locked == 0 {
        return;
    }
    let switch = read_user::<u64>(locked + 8).map_or(0, |s| s.wrapping_add(1));
    if let Some(t) = thread_entry(tid) {
        // SAFETY: this thread's entry; the field is written only by this thread.
        unsafe { (*t).wait_switch = switch };
    }
}

/// The timed wait returned `ret`: on a timeout, did the waiter ask the holder to drop?
#[inline(always)]
pub(crate) fn wait_ended(tid: u32, ret: i64) {
    if ret != ETIMEDOUT {
        return;
    }
    let Some(t) = thread_entry(tid) else { return };
    let locked = gil_locked_addr();
    if locked != 0 {
        // CPython's own test: still locked, and no switch during the wait.
        let held = read_user::<i32>(locked).unwrap_or(0) > 0;
        let switch = read_user::<u64>(locked + 8).map_or(0, |s| s.wrapping_add(1));
        // SAFETY: this thread's entry; the field is written only by this thread.
        let began = unsafe { (*t).wait_switch };
        if !held || began == 0 || began != switch {
            return;
        }
    }
    let Some(g) = HANDOFF_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the one state slot; the waiter holds gil->mutex (see the module comment). The
    // requests count is written only by this thread.
    unsafe {
        (*t).drop_requests += 1;
        if (*g).request_ns == 0 {
            (*g).request_ns = now_ns();
            (*g).requester = tid;
        }
    }
}

/// Thread `tid` took the GIL at `acquired` after waiting `wait_ns`: one more handoff from the
/// last dropper.
#[inline(always)]
pub(crate) fn acquired(tid: u32, wait_ns: u64, acquired: u64) {
    let Some(g) = HANDOFF_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the one state slot; acquisitions are serialised by the GIL.
    let g = unsafe { &mut *g };
    let key = HandoffKey {
        from: g.last_dropper,
        to: tid,
    };
    match HANDOFF_PAIRS.get_ptr_mut(&key) {
        // SAFETY: updated only by GIL holders, one at a time.
        Some(p) => unsafe {
            (*p).count += 1;
            (*p).wait_ns += wait_ns;
        },
        None => {
            let first = HandoffPair { count: 1, wait_ns };
            if HANDOFF_PAIRS.insert(&key, &first, 0).is_err() {
                g.pairs_lost += 1;
            }
        }
    }
    if g.last_drop_forced != 0 {
        g.last_drop_forced = 0;
        let _ = histogram::add(
            &HANDOFF_HIST,
            &HANDOFF_HIST_FORCED_LATENCY,
            acquired.saturating_sub(g.drop_ns),
        );
        let requester = g.last_requester;
        if requester != 0 && requester != tid {
            if let Some(r) = thread_entry(requester) {
                // SAFETY: requests_lost is written only by GIL holders, one at a time.
                unsafe { (*r).requests_lost += 1 };
            }
        }
    }
}

/// Thread `tid` drops the GIL it took at `acquired` (0: unknown); `now` is the drop.
#[inline(always)]
pub(crate) fn dropped(tid: u32, acquired: u64, now: u64) {
    let Some(g) = HANDOFF_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the one state slot; drops are serialised by the GIL.
    let g = unsafe { &mut *g };
    let forced = g.request_ns != 0 && acquired != 0 && g.request_ns >= acquired;
    if let Some(t) = thread_entry(tid) {
        // SAFETY: these counts are written only by the thread they describe.
        unsafe {
            if forced {
                (*t).forced_drops += 1;
            } else {
                (*t).voluntary_drops += 1;
            }
        }
    }
    g.last_drop_forced = forced as u32;
    g.last_requester = if forced { g.requester } else { 0 };
    g.request_ns = 0;
    g.requester = 0;
    g.last_dropper = tid;
    g.drop_ns = now;
}

/// drop_gil (two-trap design): the acquisition that began this hold, when its wait was seen
/// (`take` set), then the drop.
#[inline(always)]
pub(crate) fn on_drop(tid: u32, take: u64, acquired_ns: u64, now: u64) {
    if take != 0 {
        acquired(tid, acquired_ns.saturating_sub(take), acquired_ns);
    }
    dropped(tid, acquired_ns, now);
}
