//! Kernel programs for named mutexes: per-(lock, thread) wait and hold of pthread mutexes and of
//! custom lock functions, aggregated into histograms in maps.
//!
//! A lock call's entry stores (lock address, start, operation) for the thread; its return decides
//! what happened (acquired, busy, failed) and records the wait; an unlock's entry ends the hold.
//! `pthread_cond_*wait` releases the mutex on entry and re-takes it before returning: its entry
//! ends the hold, its return records the time in between as condition wait and starts a new hold.
//! A futex syscall made while a lock call is in progress marks that acquisition contended.
//! Each thread only updates its own entries, so no atomics are needed.

use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_probe_read_user,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, StackTrace},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, tracing::StackIdContext as _},
};
use observer_common::{
    Histogram, MUTEX_CFG_ALL, MUTEX_CFG_ARMED, MUTEX_CFG_SLOTS, MUTEX_CFG_STACKS, MUTEX_CFG_TGID,
    MUTEX_CUSTOM_ADDR_MASK, MUTEX_CUSTOM_PAIR_SHIFT, MUTEX_CUSTOM_TAG, MUTEX_ERR_COUNTERS,
    MUTEX_ERR_STATE_FULL, MUTEX_ERR_STATS_FULL, MUTEX_MAX_STACKS, MUTEX_MAX_STATS,
    MUTEX_OP_COND_WAIT, MUTEX_OP_CUSTOM, MUTEX_OP_LOCK, MUTEX_OP_TIMEDLOCK, MUTEX_OP_TRYLOCK,
    MutexCounts, MutexHeld, MutexKey, MutexPending, MutexSite, MutexSiteKey, MutexStatKind,
    PTHREAD_MUTEX_KIND_MASK, PTHREAD_MUTEX_KIND_OFFSET, PTHREAD_MUTEX_RECURSIVE,
};

/// Hash maps that allocate entries as they are inserted (BPF_F_NO_PREALLOC): a histogram is
/// 4 KiB, and most slots stay unused.
const NO_PREALLOC: u32 = 1;
/// bpf_get_stackid flag: the user-space stack.
const BPF_F_USER_STACK: u64 = 1 << 8;
/// x86_64 syscall number of futex.
const SYS_FUTEX: i64 = 202;
/// EBUSY: what pthread_mutex_trylock returns when the mutex is taken.
const EBUSY: i64 = 16;
/// Pending-call slots: pthread calls and custom acquire functions are kept apart, so a custom
/// acquire that calls pthread_mutex_lock inside does not overwrite its own pending entry.
const SLOT_PTHREAD: u32 = 0;
const SLOT_CUSTOM: u32 = 1;

/// (lock, tid, kind) → distribution. Read (never cleared) by userspace.
#[map]
static MUTEX_STATS: HashMap<MutexKey, Histogram> =
    HashMap::with_max_entries(MUTEX_MAX_STATS, NO_PREALLOC);

/// (lock, tid) → event counts.
#[map]
static MUTEX_COUNTS: HashMap<MutexKey, MutexCounts> =
    HashMap::with_max_entries(MUTEX_MAX_STATS, NO_PREALLOC);

/// (lock, tid) → the hold in progress. LRU: holds of threads that exited age out.
#[map]
static MUTEX_HELD: LruHashMap<MutexKey, MutexHeld> =
    LruHashMap::with_max_entries(MUTEX_MAX_STATS, 0);

/// (0, tid, slot) → the lock call in progress.
#[map]
static MUTEX_PENDING: LruHashMap<MutexKey, MutexPending> =
    LruHashMap::with_max_entries(MUTEX_MAX_STATS, 0);

/// pthread mutex addresses to track (`--lock`), unless MUTEX_CFG_ALL is set (`--mutexes`).
/// Written once by userspace before attaching.
#[map]
static MUTEX_WATCH: HashMap<u64, u32> = HashMap::with_max_entries(256, 0);

/// MUTEX_CFG_* slots, written by userspace before attaching.
#[map]
static MUTEX_CONFIG: Array<u64> = Array::with_max_entries(MUTEX_CFG_SLOTS, 0);

/// Call-site stacks of lock calls (`--mutexes`).
#[map]
static MUTEX_STACKS: StackTrace = StackTrace::with_max_entries(MUTEX_MAX_STACKS, 0);

/// (lock, stack id) → what that call site did.
#[map]
static MUTEX_SITES: HashMap<MutexSiteKey, MutexSite> =
    HashMap::with_max_entries(MUTEX_MAX_STATS, NO_PREALLOC);

/// Events that could not be recorded (MUTEX_ERR_*).
#[map]
static MUTEX_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MUTEX_ERR_COUNTERS, 0);

#[inline(always)]
fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a helper with no arguments and no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn config(slot: u32) -> u64 {
    MUTEX_CONFIG.get(slot).copied().unwrap_or(0)
}

#[inline(always)]
fn count_error(which: u32) {
    if let Some(c) = MUTEX_ERRORS.get_ptr_mut(which) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn armed() -> bool {
    config(MUTEX_CFG_ARMED) != 0
}

/// Whether a pthread mutex is recursive, from its type bits in the target's memory.
#[inline(always)]
fn is_recursive_pthread(addr: u64) -> bool {
    // SAFETY: bpf_probe_read_user checks the address; a failed read means "not recursive".
    let kind = unsafe {
        bpf_probe_read_user((addr + PTHREAD_MUTEX_KIND_OFFSET) as *const i32).unwrap_or(0)
    };
    kind & PTHREAD_MUTEX_KIND_MASK == PTHREAD_MUTEX_RECURSIVE
}

#[inline(always)]
fn watched(addr: u64) -> bool {
    // Custom lock instances (tagged) are all tracked: their addresses are not known in advance.
    addr != 0
        && (addr & MUTEX_CUSTOM_TAG != 0
            || config(MUTEX_CFG_ALL) != 0
            || MUTEX_WATCH.get_ptr(&addr).is_some())
}

#[inline(always)]
fn key(addr: u64, tid: u32, kind: u32) -> MutexKey {
    MutexKey { addr, tid, kind }
}

#[inline(always)]
fn record(addr: u64, tid: u32, kind: MutexStatKind, ns: u64) {
    if crate::histogram::add(&MUTEX_STATS, &key(addr, tid, kind as u32), ns).is_err() {
        count_error(MUTEX_ERR_STATS_FULL);
    }
}

/// This thread's counters for a lock, created on first use.
#[inline(always)]
fn counts(addr: u64, tid: u32) -> Option<*mut MutexCounts> {
    let k = key(addr, tid, 0);
    if let Some(c) = MUTEX_COUNTS.get_ptr_mut(&k) {
        return Some(c);
    }
    let fresh = MutexCounts {
        comm: bpf_get_current_comm().unwrap_or_default(),
        ..Default::default()
    };
    if MUTEX_COUNTS.insert(&k, &fresh, 0).is_err() {
        count_error(MUTEX_ERR_STATS_FULL);
        return None;
    }
    MUTEX_COUNTS.get_ptr_mut(&k)
}

#[inline(always)]
fn call_enter(ctx: &ProbeContext, addr: u64, op: u32, slot: u32) {
    if !armed() || !watched(addr) {
        return;
    }
    let (stack_id, caller) = if config(MUTEX_CFG_STACKS) != 0 {
        let id = ctx
            .get_stackid(&MUTEX_STACKS, BPF_F_USER_STACK)
            .map(|id| id as i64)
            .unwrap_or(-1);
        // At a function's first instruction the return address is on top of the stack.
        // SAFETY: `regs` is the probe's register set; the user read is checked by the helper.
        let caller = unsafe {
            let sp = (*ctx.regs).rsp;
            bpf_probe_read_user(sp as *const u64).unwrap_or(0)
        };
        (id, caller)
    } else {
        (-1, 0)
    };
    let p = MutexPending {
        addr,
        start_ns: now_ns(),
        stack_id,
        caller,
        op,
        contended: 0,
    };
    if MUTEX_PENDING.insert(&key(0, tid(), slot), &p, 0).is_err() {
        count_error(MUTEX_ERR_STATE_FULL);
    }
}

/// The end of a lock call: `acquired` unless it returned without the lock.
#[inline(always)]
fn call_return(ret: i64, slot: u32) {
    let tid = tid();
    let pk = key(0, tid, slot);
    let Some(pp) = MUTEX_PENDING.get_ptr(&pk) else {
        return;
    };
    // SAFETY: this thread's own entry, copied out before it is removed.
    let p = unsafe { *pp };
    let _ = MUTEX_PENDING.remove(&pk);
    let now = now_ns();
    let waited = now.saturating_sub(p.start_ns);
    let addr = p.addr;
    let Some(c) = counts(addr, tid) else { return };
    if p.op == MUTEX_OP_COND_WAIT {
        // The mutex is held again (also after a timeout): the condition wait ends, a hold begins.
        record(addr, tid, MutexStatKind::CondWait, waited);
        if let Some(h) = MUTEX_HELD.get_ptr_mut(&key(addr, tid, 0)) {
            // SAFETY: this thread's own entry.
            unsafe { (*h).start_ns = now };
        } else {
            start_hold(addr, tid, now);
        }
        return;
    }
    let acquired = p.op == MUTEX_OP_CUSTOM || ret == 0;
    if !acquired {
        // SAFETY: this thread's own entry.
        unsafe {
            if p.op == MUTEX_OP_TRYLOCK && ret == EBUSY {
                (*c).trylock_busy += 1;
            } else {
                (*c).failed += 1;
            }
        }
        if p.op != MUTEX_OP_TRYLOCK {
            record(addr, tid, MutexStatKind::FailedWait, waited);
        }
        return;
    }
    if let Some(h) = MUTEX_HELD.get_ptr_mut(&key(addr, tid, 0)) {
        // Already held by this thread: a recursive re-acquisition (no wait, no new hold) if the
        // lock can be re-taken (a recursive pthread mutex, or a custom lock); else its release
        // was missed (the entry outlived it), and this is a new hold.
        if p.op == MUTEX_OP_CUSTOM || is_recursive_pthread(addr) {
            // SAFETY: this thread's own entries.
            unsafe {
                (*h).depth += 1;
                (*c).recursive += 1;
            }
            return;
        }
        let _ = MUTEX_HELD.remove(&key(addr, tid, 0));
    }
    // SAFETY: this thread's own entry.
    unsafe {
        (*c).acquisitions += 1;
        (*c).contended += p.contended as u64;
    }
    record(addr, tid, MutexStatKind::Wait, waited);
    start_hold(addr, tid, now);
    if p.stack_id >= 0 {
        count_site(
            addr,
            p.caller,
            p.stack_id as u32,
            p.contended as u64,
            waited,
        );
    }
}

#[inline(always)]
fn start_hold(addr: u64, tid: u32, now: u64) {
    let h = MutexHeld {
        start_ns: now,
        depth: 1,
    };
    if MUTEX_HELD.insert(&key(addr, tid, 0), &h, 0).is_err() {
        count_error(MUTEX_ERR_STATE_FULL);
    }
}

#[inline(always)]
fn count_site(addr: u64, caller: u64, stack_id: u32, contended: u64, waited: u64) {
    let k = MutexSiteKey {
        addr,
        caller,
        stack_id,
        _pad: 0,
    };
    if MUTEX_SITES.get_ptr_mut(&k).is_none()
        && MUTEX_SITES.insert(&k, &MutexSite::default(), 0).is_err()
    {
        count_error(MUTEX_ERR_STATS_FULL);
        return;
    }
    if let Some(s) = MUTEX_SITES.get_ptr_mut(&k) {
        // SAFETY: a map value; two threads of one call site may race on it, which can lose an
        // increment of a ranking statistic, never corrupt memory.
        unsafe {
            (*s).acquisitions += 1;
            (*s).contended += contended;
            (*s).wait_ns += waited;
        }
    }
}

/// An unlock: the hold ends when the outermost unlock of this thread's hold comes.
#[inline(always)]
fn release(addr: u64) {
    if !watched(addr) {
        return;
    }
    let tid = tid();
    let hk = key(addr, tid, 0);
    let Some(h) = MUTEX_HELD.get_ptr_mut(&hk) else {
        // Taken before we attached: its start is unknown.
        return;
    };
    // SAFETY: this thread's own entry.
    let (depth, start) = unsafe { ((*h).depth, (*h).start_ns) };
    if depth > 1 {
        // SAFETY: as above.
        unsafe { (*h).depth = depth - 1 };
        return;
    }
    let _ = MUTEX_HELD.remove(&hk);
    if start != 0 {
        record(
            addr,
            tid,
            MutexStatKind::Hold,
            now_ns().saturating_sub(start),
        );
    }
}

#[uprobe]
pub fn mutex_lock_enter(ctx: ProbeContext) -> u32 {
    call_enter(
        &ctx,
        ctx.arg::<u64>(0).unwrap_or(0),
        MUTEX_OP_LOCK,
        SLOT_PTHREAD,
    );
    0
}

#[uprobe]
pub fn mutex_trylock_enter(ctx: ProbeContext) -> u32 {
    call_enter(
        &ctx,
        ctx.arg::<u64>(0).unwrap_or(0),
        MUTEX_OP_TRYLOCK,
        SLOT_PTHREAD,
    );
    0
}

/// pthread_mutex_timedlock and pthread_mutex_clocklock.
#[uprobe]
pub fn mutex_timedlock_enter(ctx: ProbeContext) -> u32 {
    call_enter(
        &ctx,
        ctx.arg::<u64>(0).unwrap_or(0),
        MUTEX_OP_TIMEDLOCK,
        SLOT_PTHREAD,
    );
    0
}

/// Return of every pthread lock call above (and of the condition waits).
#[uretprobe]
pub fn mutex_lock_return(ctx: RetProbeContext) -> u32 {
    call_return(ctx.ret::<i64>() as i32 as i64, SLOT_PTHREAD);
    0
}

#[uprobe]
pub fn mutex_unlock_enter(ctx: ProbeContext) -> u32 {
    release(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

/// pthread_cond_wait/timedwait/clockwait(cond, mutex, …): the mutex is released inside.
#[uprobe]
pub fn cond_wait_enter(ctx: ProbeContext) -> u32 {
    let addr = ctx.arg::<u64>(1).unwrap_or(0);
    if !armed() || !watched(addr) {
        return 0;
    }
    let tid = tid();
    let now = now_ns();
    if let Some(h) = MUTEX_HELD.get_ptr_mut(&key(addr, tid, 0)) {
        // SAFETY: this thread's own entry.
        let start = unsafe { (*h).start_ns };
        if start != 0 {
            record(addr, tid, MutexStatKind::Hold, now.saturating_sub(start));
        }
        // SAFETY: as above. Depth stays: the same hold resumes when the wait returns.
        unsafe { (*h).start_ns = 0 };
    }
    let p = MutexPending {
        addr,
        start_ns: now,
        stack_id: -1,
        caller: 0,
        op: MUTEX_OP_COND_WAIT,
        contended: 0,
    };
    if MUTEX_PENDING
        .insert(&key(0, tid, SLOT_PTHREAD), &p, 0)
        .is_err()
    {
        count_error(MUTEX_ERR_STATE_FULL);
    }
    0
}

/// A custom lock instance: the argument the attach cookie names (low byte), tagged with
/// MUTEX_CUSTOM_TAG and the `--lock-fns` pair's index (cookie bits 8..15), so it never meets a
/// pthread mutex's entries (a custom lock that wraps a pthread mutex passes the same address).
#[inline(always)]
fn custom_addr(ctx: &ProbeContext) -> u64 {
    // SAFETY: the helper only reads the cookie of the current attachment.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    // All six argument registers are read first, each at its constant offset (volatile reads
    // are neither merged nor moved): the verifier refuses a read at a computed context offset.
    // SAFETY: `regs` is the probe's register set, valid for the whole program run.
    let args = unsafe {
        let r = &*ctx.regs;
        [
            read_volatile(&r.rdi),
            read_volatile(&r.rsi),
            read_volatile(&r.rdx),
            read_volatile(&r.rcx),
            read_volatile(&r.r8),
            read_volatile(&r.r9),
        ]
    };
    let [a0, a1, a2, a3, a4, a5] = args;
    let a = match cookie & 0xff {
        0 => a0,
        1 => a1,
        2 => a2,
        3 => a3,
        4 => a4,
        _ => a5,
    };
    if a == 0 {
        return 0;
    }
    let pair = (cookie >> 8) & 0x7f;
    (a & MUTEX_CUSTOM_ADDR_MASK) | MUTEX_CUSTOM_TAG | (pair << MUTEX_CUSTOM_PAIR_SHIFT)
}

/// `--lock-fns ACQUIRE:RELEASE[:ARG]`: entry of the acquire function.
#[uprobe]
pub fn lockfn_acquire_enter(ctx: ProbeContext) -> u32 {
    call_enter(&ctx, custom_addr(&ctx), MUTEX_OP_CUSTOM, SLOT_CUSTOM);
    0
}

#[uretprobe]
pub fn lockfn_acquire_return(_ctx: RetProbeContext) -> u32 {
    call_return(0, SLOT_CUSTOM);
    0
}

#[uprobe]
pub fn lockfn_release_enter(ctx: ProbeContext) -> u32 {
    release(custom_addr(&ctx));
    0
}

/// Every syscall entry: a futex call made during a lock call means the lock was contended.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn mutex_futex(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) != config(MUTEX_CFG_TGID) {
        return 0;
    }
    let id: i64 = ctx.arg(1);
    if id != SYS_FUTEX {
        return 0;
    }
    let tid = pid_tgid as u32;
    for slot in [SLOT_PTHREAD, SLOT_CUSTOM] {
        if let Some(p) = MUTEX_PENDING.get_ptr_mut(&key(0, tid, slot)) {
            // SAFETY: this thread's own entry.
            unsafe {
                if (*p).op != MUTEX_OP_COND_WAIT {
                    (*p).contended = 1;
                }
            }
        }
    }
    0
}
