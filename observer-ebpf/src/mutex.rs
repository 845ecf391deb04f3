//! Kernel programs for named mutexes: per-(lock, thread) wait and hold of pthread mutexes and of
//! custom lock functions, aggregated into histograms in maps.
//!
//! `pthread_mutex_lock` and `pthread_mutex_unlock` take one trap each, no return probe (the GIL's
//! two-trap idea): the lock call's entry starts the wait and, tentatively, the hold, because an
//! uncontended lock is had at once. Only a contended lock sleeps in a futex wait on the mutex's
//! own word (`__lock`, at offset 0): the futex syscall (raw tracepoints, no uprobe) marks the
//! acquisition contended and its return moves the hold's start to the wake-up; the last wake-up
//! before the unlock is the acquisition (a woken thread that loses the race waits again). The
//! unlock's entry records both the wait and the hold.
//!
//! trylock and timedlock keep a return probe (their outcome decides: acquired, busy, timed out)
//! and so do custom acquire functions (they may spin without a syscall); all three are rarer.
//! `pthread_cond_*wait` releases the mutex on entry and re-takes it before returning: its entry
//! ends the hold, its return records the time in between as condition wait and starts a new hold.
//!
//! Registers read: the entry programs read only their argument registers (`rdi`; `rsi` for the
//! condition waits; the cookie's register for custom functions) and, with call-site stacks
//! (`--mutexes`), `rsp`, `rip` and `rbp`: so they work as well at an instruction a few bytes into
//! the function (glibc's `pthread_mutex_lock+0xe`, `pthread_mutex_unlock+5`) as long as nothing
//! was pushed before it and the argument is still where it was.
//! Each thread only updates its own entries, so no atomics are needed.

use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext as _,
    bindings::pt_regs,
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, PerCpuArray, StackTrace},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, tracing::StackIdContext as _},
};
use observer_common::{
    Histogram, MUTEX_CFG_ALL, MUTEX_CFG_ARMED, MUTEX_CFG_SLOTS, MUTEX_CFG_STACKS, MUTEX_CFG_TGID,
    MUTEX_CUSTOM_ADDR_MASK, MUTEX_CUSTOM_PAIR_SHIFT, MUTEX_CUSTOM_TAG, MUTEX_ERR_COUNTERS,
    MUTEX_ERR_STACK_LOST, MUTEX_ERR_STATE_FULL, MUTEX_ERR_STATS_FULL, MUTEX_MAX_STACKS,
    MUTEX_MAX_STATS, MUTEX_OP_COND_WAIT, MUTEX_OP_CUSTOM, MUTEX_OP_TIMEDLOCK, MUTEX_OP_TRYLOCK,
    MutexCounts, MutexHeld, MutexKey, MutexPending, MutexSite, MutexSiteKey, MutexStatKind,
    PTHREAD_MUTEX_KIND_MASK, PTHREAD_MUTEX_KIND_OFFSET, PTHREAD_MUTEX_RECURSIVE,
};

use crate::NO_PREALLOC;

/// bpf_get_stackid flag: the user-space stack.
const BPF_F_USER_STACK: u64 = 1 << 8;
/// x86_64 syscall number of futex.
const SYS_FUTEX: i64 = 202;
/// futex operations that sleep until the lock's word changes (the command bits of `op`):
/// FUTEX_WAIT, FUTEX_LOCK_PI, FUTEX_WAIT_BITSET, FUTEX_LOCK_PI2.
const FUTEX_CMD_MASK: u64 = 0x7f;
const FUTEX_SLEEPS: [u64; 4] = [0, 6, 9, 13];
/// EBUSY: what pthread_mutex_trylock returns when the mutex is taken.
const EBUSY: i64 = 16;
/// Pending-call slots: pthread calls and custom acquire functions are kept apart, so a custom
/// acquire that calls pthread_mutex_lock inside does not overwrite its own pending entry. The
/// third is a futex wait on a lock being acquired, until the syscall returns.
const SLOT_PTHREAD: u32 = 0;
const SLOT_CUSTOM: u32 = 1;
const SLOT_FUTEX: u32 = 2;
/// Python lock calls (pylock.rs): a semaphore wait.
pub(crate) const SLOT_PY: u32 = 3;

/// (lock, tid, kind) → distribution. Read (never cleared) by userspace.
#[map]
pub(crate) static MUTEX_STATS: HashMap<MutexKey, Histogram> =
    HashMap::with_max_entries(MUTEX_MAX_STATS, NO_PREALLOC);

/// (lock, tid) → event counts.
#[map]
pub(crate) static MUTEX_COUNTS: HashMap<MutexKey, MutexCounts> =
    HashMap::with_max_entries(MUTEX_MAX_STATS, NO_PREALLOC);

/// (lock, tid) → the acquisition and hold in progress (depth 0: none). Not LRU: an eviction would
/// silently lose a live hold; a full map fails the insert, which is counted.
#[map]
pub(crate) static MUTEX_HELD: HashMap<MutexKey, MutexHeld> =
    HashMap::with_max_entries(MUTEX_MAX_STATS, NO_PREALLOC);

/// (0, tid, slot) → the call in progress (trylock, timedlock, condition wait, custom acquire,
/// futex wait). Removed when it returns.
#[map]
pub(crate) static MUTEX_PENDING: HashMap<MutexKey, MutexPending> =
    HashMap::with_max_entries(MUTEX_MAX_STATS, NO_PREALLOC);

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
pub(crate) fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: a helper with no arguments and no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn config(slot: u32) -> u64 {
    MUTEX_CONFIG.get(slot).copied().unwrap_or(0)
}

#[inline(always)]
pub(crate) fn count_error(which: u32) {
    if let Some(c) = MUTEX_ERRORS.get_ptr_mut(which) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub(crate) fn armed() -> bool {
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
pub(crate) fn key(addr: u64, tid: u32, kind: u32) -> MutexKey {
    MutexKey { addr, tid, kind }
}

#[inline(always)]
pub(crate) fn record(addr: u64, tid: u32, kind: MutexStatKind, ns: u64) {
    if crate::histogram::add(&MUTEX_STATS, &key(addr, tid, kind as u32), ns).is_err() {
        count_error(MUTEX_ERR_STATS_FULL);
    }
}

/// This thread's counters for a lock, created on first use.
#[inline(always)]
pub(crate) fn counts(addr: u64, tid: u32) -> Option<*mut MutexCounts> {
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

/// Where a lock call comes from (`--mutexes`): its return address, else 0. The first call from
/// a site also stores the site's stack.
#[inline(always)]
fn call_site(ctx: &ProbeContext, addr: u64) -> u64 {
    if config(MUTEX_CFG_STACKS) == 0 {
        return 0;
    }
    // Nothing is pushed before the probed instruction (the first, or an early branch): the
    // return address is on top of the stack.
    // SAFETY: `regs` is the probe's register set; the user read is checked by the helper.
    let caller = unsafe {
        let sp = (*ctx.regs).rsp;
        bpf_probe_read_user(sp as *const u64).unwrap_or(0)
    };
    let k = MutexSiteKey { addr, caller };
    if MUTEX_SITES.get_ptr(&k).is_none() {
        let stack_id = match ctx.get_stackid(&MUTEX_STACKS, BPF_F_USER_STACK) {
            Ok(id) => id,
            Err(_) => {
                count_error(MUTEX_ERR_STACK_LOST);
                -1
            }
        };
        let site = MutexSite {
            stack_id,
            ..Default::default()
        };
        if MUTEX_SITES.insert(&k, &site, 0).is_err() {
            count_error(MUTEX_ERR_STATS_FULL);
        }
    }
    caller
}

/// This thread's entry for a lock, created (not held) on first use and kept afterwards.
#[inline(always)]
fn held_entry(addr: u64, tid: u32) -> Option<*mut MutexHeld> {
    let k = key(addr, tid, 0);
    if let Some(h) = MUTEX_HELD.get_ptr_mut(&k) {
        return Some(h);
    }
    if MUTEX_HELD.insert(&k, &MutexHeld::default(), 0).is_err() {
        count_error(MUTEX_ERR_STATE_FULL);
        return None;
    }
    MUTEX_HELD.get_ptr_mut(&k)
}

/// A lock call with a return probe (trylock, timedlock, custom acquire): its entry.
#[inline(always)]
fn call_enter(ctx: &ProbeContext, addr: u64, op: u32, slot: u32) {
    if !armed() || !watched(addr) {
        return;
    }
    let caller = call_site(ctx, addr);
    let p = MutexPending {
        addr,
        start_ns: now_ns(),
        caller,
        op,
        contended: 0,
    };
    if MUTEX_PENDING.insert(&key(0, tid(), slot), &p, 0).is_err() {
        count_error(MUTEX_ERR_STATE_FULL);
    }
}

/// An acquisition is over its wait: count it and record the wait.
#[inline(always)]
pub(crate) fn acquired(addr: u64, tid: u32, waited: u64, contended: u32, caller: u64) {
    if let Some(c) = counts(addr, tid) {
        // SAFETY: this thread's own entry.
        unsafe {
            (*c).acquisitions += 1;
            (*c).contended += contended as u64;
        }
    }
    record(addr, tid, MutexStatKind::Wait, waited);
    if caller != 0 {
        count_site(addr, caller, contended as u64, waited);
    }
}

/// A plain lock's wait is known once the thread stops acquiring (it unlocks, or waits on a
/// condition): from the call's entry to the hold's start, the last futex wake-up if any.
#[inline(always)]
fn settle(addr: u64, tid: u32, h: *mut MutexHeld) {
    // SAFETY: this thread's own entry (a map value, valid for the whole program run).
    let st = unsafe { *h };
    if st.wait_start_ns == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe {
        (*h).wait_start_ns = 0;
        (*h).acquiring = 0;
    }
    acquired(
        addr,
        tid,
        st.start_ns.saturating_sub(st.wait_start_ns),
        st.contended,
        st.caller,
    );
}

/// The end of a lock call with a return probe: `ret` 0 unless it returned without the lock.
#[inline(always)]
fn call_return(ret: i64, slot: u32) {
    if !armed() {
        return;
    }
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
    if p.op == MUTEX_OP_COND_WAIT {
        // The mutex is held again (also after a timeout): the condition wait ends, a hold
        // begins (the same hold, as far as recursion goes).
        record(addr, tid, MutexStatKind::CondWait, waited);
        if let Some(h) = held_entry(addr, tid) {
            // SAFETY: this thread's own entry.
            unsafe {
                if (*h).depth == 0 {
                    (*h).depth = 1;
                }
                (*h).start_ns = now;
            }
        }
        return;
    }
    if p.op != MUTEX_OP_CUSTOM && ret != 0 {
        if let Some(c) = counts(addr, tid) {
            // SAFETY: this thread's own entry.
            unsafe {
                if p.op == MUTEX_OP_TRYLOCK && ret == EBUSY {
                    (*c).trylock_busy += 1;
                } else {
                    (*c).failed += 1;
                }
            }
        }
        if p.op != MUTEX_OP_TRYLOCK {
            record(addr, tid, MutexStatKind::FailedWait, waited);
        }
        return;
    }
    let Some(h) = held_entry(addr, tid) else {
        return;
    };
    // SAFETY: this thread's own entry.
    if unsafe { (*h).depth } > 0 {
        // Already held by this thread: a recursive re-acquisition (no wait, no new hold) if the
        // lock can be re-taken (a recursive pthread mutex, or a custom lock); else its release
        // was missed, and this is a new hold.
        if p.op == MUTEX_OP_CUSTOM || is_recursive_pthread(addr) {
            recursive(addr, tid, h);
            return;
        }
    }
    acquired(addr, tid, waited, p.contended, p.caller);
    // SAFETY: as above.
    unsafe {
        *h = MutexHeld {
            start_ns: now,
            depth: 1,
            wait_start_ns: 0,
            caller: 0,
            acquiring: 0,
            contended: 0,
            holder: 0,
            _pad: 0,
        };
    }
}

#[inline(always)]
fn recursive(addr: u64, tid: u32, h: *mut MutexHeld) {
    // SAFETY: this thread's own entry.
    unsafe { (*h).depth += 1 };
    if let Some(c) = counts(addr, tid) {
        // SAFETY: as above.
        unsafe { (*c).recursive += 1 };
    }
}

/// Adds an acquisition to its call site (created by the lock call's entry).
#[inline(always)]
fn count_site(addr: u64, caller: u64, contended: u64, waited: u64) {
    let Some(s) = MUTEX_SITES.get_ptr_mut(&MutexSiteKey { addr, caller }) else {
        return; // not created: counted as full then
    };
    // SAFETY: a map value; two threads of one call site may race on it, which can lose an
    // increment of a ranking statistic, never corrupt memory.
    unsafe {
        (*s).acquisitions += 1;
        (*s).contended += contended;
        (*s).wait_ns += waited;
    }
}

/// An unlock: the hold ends when the outermost unlock of this thread's hold comes. Only locks
/// with an entry can be held, so no watch-list lookup is needed. Nothing is recorded once
/// userspace has disarmed the programs for its final read.
#[inline(always)]
fn release(addr: u64) {
    if addr == 0 || !armed() {
        return;
    }
    let tid = tid();
    let Some(h) = MUTEX_HELD.get_ptr_mut(&key(addr, tid, 0)) else {
        return;
    };
    // SAFETY: this thread's own entry.
    let depth = unsafe { (*h).depth };
    if depth == 0 {
        // Taken before we attached: its start is unknown.
        return;
    }
    if depth > 1 {
        // SAFETY: as above.
        unsafe { (*h).depth = depth - 1 };
        return;
    }
    settle(addr, tid, h);
    // SAFETY: as above.
    let start = unsafe { (*h).start_ns };
    // SAFETY: as above.
    unsafe {
        (*h).depth = 0;
        (*h).start_ns = 0;
    }
    if start != 0 {
        record(
            addr,
            tid,
            MutexStatKind::Hold,
            now_ns().saturating_sub(start),
        );
    }
}

/// pthread_mutex_lock: the wait starts, and the hold tentatively too. No return probe.
#[uprobe]
pub fn mutex_lock_enter(ctx: ProbeContext) -> u32 {
    let addr = ctx.arg::<u64>(0).unwrap_or(0);
    if !armed() || !watched(addr) {
        return 0;
    }
    let tid = tid();
    let Some(h) = held_entry(addr, tid) else {
        return 0;
    };
    // SAFETY: this thread's own entry.
    if unsafe { (*h).depth } > 0 && is_recursive_pthread(addr) {
        recursive(addr, tid, h);
        return 0;
    }
    // Held and not recursive: its release was missed (or this call fails, EDEADLK): a new hold.
    let caller = call_site(&ctx, addr);
    let now = now_ns();
    // SAFETY: as above.
    unsafe {
        *h = MutexHeld {
            start_ns: now,
            depth: 1,
            wait_start_ns: now,
            caller,
            acquiring: 1,
            contended: 0,
            holder: 0,
            _pad: 0,
        };
    }
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

/// Return of trylock, timedlock and the condition waits.
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
        if unsafe { (*h).depth } > 0 {
            settle(addr, tid, h);
            // SAFETY: as above.
            let start = unsafe { (*h).start_ns };
            if start != 0 {
                record(addr, tid, MutexStatKind::Hold, now.saturating_sub(start));
            }
            // SAFETY: as above. Depth stays: the same hold resumes when the wait returns.
            unsafe { (*h).start_ns = 0 };
        }
    }
    let p = MutexPending {
        addr,
        start_ns: now,
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
    // Calls with a return probe: any futex during the call.
    for slot in [SLOT_PTHREAD, SLOT_CUSTOM, SLOT_PY] {
        if let Some(p) = MUTEX_PENDING.get_ptr_mut(&key(0, tid, slot)) {
            // SAFETY: this thread's own entry.
            unsafe {
                if (*p).op != MUTEX_OP_COND_WAIT {
                    (*p).contended = 1;
                }
            }
        }
    }
    // Plain locks: a sleeping futex operation on the word of a lock this thread is acquiring.
    let regs: u64 = ctx.arg(0);
    let regs = regs as *const pt_regs;
    // SAFETY: the tracepoint's own register set, read through the checked helper.
    let (uaddr, op) = unsafe {
        (
            bpf_probe_read_kernel(&(*regs).rdi).unwrap_or(0),
            bpf_probe_read_kernel(&(*regs).rsi).unwrap_or(0),
        )
    };
    let cmd = op & FUTEX_CMD_MASK;
    if uaddr == 0 || !FUTEX_SLEEPS.contains(&cmd) {
        return 0;
    }
    let Some(h) = MUTEX_HELD.get_ptr_mut(&key(uaddr, tid, 0)) else {
        return 0;
    };
    // SAFETY: this thread's own entry.
    unsafe {
        if (*h).acquiring == 0 {
            return 0;
        }
        (*h).contended = 1;
    }
    let p = MutexPending {
        addr: uaddr,
        ..Default::default()
    };
    if MUTEX_PENDING
        .insert(&key(0, tid, SLOT_FUTEX), &p, 0)
        .is_err()
    {
        count_error(MUTEX_ERR_STATE_FULL);
    }
    0
}

/// Every syscall exit: the return of a futex wait on a lock being acquired is a wake-up, and the
/// last wake-up before the unlock is when the lock was had.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn mutex_futex_exit(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) != config(MUTEX_CFG_TGID) {
        return 0;
    }
    let tid = pid_tgid as u32;
    let pk = key(0, tid, SLOT_FUTEX);
    let Some(p) = MUTEX_PENDING.get_ptr(&pk) else {
        return 0;
    };
    // SAFETY: this thread's own entry, read before it is removed.
    let addr = unsafe { (*p).addr };
    let _ = MUTEX_PENDING.remove(&pk);
    if let Some(h) = MUTEX_HELD.get_ptr_mut(&key(addr, tid, 0)) {
        // SAFETY: this thread's own entry.
        unsafe {
            if (*h).acquiring != 0 {
                (*h).start_ns = now_ns();
            }
        }
    }
    0
}
