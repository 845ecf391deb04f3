//! Blame: which Python code held the GIL while another thread timed out waiting for it, and
//! which code was waiting.
//!
//! The trigger is a waiter's `pthread_cond_timedwait(&gil->cond)` returning ETIMEDOUT inside
//! take_gil: the moment CPython asks the holder to drop because it kept the GIL a whole switch
//! interval. Right then, from the waiter's context (same address space), the holder's frame
//! chain (`gil->last_holder`'s current frame) is the code that makes others wait: a sample of
//! what is *running*, not of where the hold ends (after a long C call drop_gil runs at the next
//! release point, a line later). Samples come only while someone waits, at most one per switch
//! interval per waiter, so the uncontended GIL cycle pays nothing but one array lookup at the
//! drop.
//!
//! Hold time is attributed so that the blamed time of a sampled hold equals the hold: from the
//! acquisition to the first sample to the first sample's stack (at the drop, when the
//! acquisition is known), between two samples to the later one's stack, and from the last
//! sample to the drop to the last sample's stack. Waits that timed out at least once are
//! attributed whole to the waiter's own stack at its first timeout (it has not run since it
//! asked for the GIL), up to its last wake-up (the acquisition, in the two-trap design).
//!
//! Two waiters can sample the same hold at once on two CPUs; the holder slot is then updated
//! without a lock and a segment can be counted twice or missed (rare: their timeouts are an
//! interval apart unless they started waiting together).
use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use observer_common::{
    BLAME_ERR_COUNTERS, BLAME_ERR_READ, BLAME_ERR_STACKS_FULL, BLAME_ERR_STATS_FULL,
    BLAME_ERR_WAITING_FULL, BLAME_MAX_FRAMES, BLAME_MAX_STACKS, BLAME_MAX_STATS, BLAME_NO_OFFSET,
    BLAME_WALK_NS, BLAME_WALKS, BlameConfig, BlameHolder, BlameKey, BlameStack, BlameStat,
    BlameWaiting, GIL_ADDR_COND, MAX_THREADS,
};

use crate::{NO_PREALLOC, gil_libc::gil_addr, now_ns};

/// `pthread_cond_timedwait`'s return when the interval expired.
const ETIMEDOUT: i32 = 110;
/// Frames looked at per walk: shim frames (3.12+) are skipped without taking a slot.
const MAX_VISITS: usize = BLAME_MAX_FRAMES + 8;

#[map]
static BLAME_CONFIG: Array<BlameConfig> = Array::with_max_entries(1, 0);

/// Stack id (a hash of its frames) → frames.
#[map]
static BLAME_STACKS: HashMap<u64, BlameStack> =
    HashMap::with_max_entries(BLAME_MAX_STACKS, NO_PREALLOC);

/// (holder tstate, stack) → hold time attributed.
#[map]
static BLAME_HOLDS: HashMap<BlameKey, BlameStat> =
    HashMap::with_max_entries(BLAME_MAX_STATS, NO_PREALLOC);

/// (waiter tid, stack) → waits that timed out at least once.
#[map]
static BLAME_WAITS: HashMap<BlameKey, BlameStat> =
    HashMap::with_max_entries(BLAME_MAX_STATS, NO_PREALLOC);

/// The hold being sampled (one GIL per process; a second interpreter's GIL only resets it).
#[map]
static BLAME_HOLDER: Array<BlameHolder> = Array::with_max_entries(1, 0);

/// tid → its current wait, once it timed out.
#[map]
static BLAME_WAITING: HashMap<u32, BlameWaiting> =
    HashMap::with_max_entries(MAX_THREADS, NO_PREALLOC);

#[map]
static BLAME_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(BLAME_ERR_COUNTERS, 0);

#[inline(always)]
fn count_error(which: u32) {
    count(which, 1);
}

#[inline(always)]
fn count(which: u32, n: u64) {
    if let Some(c) = BLAME_ERRORS.get_ptr_mut(which) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += n };
    }
}

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user checks the address and fails on a fault.
    unsafe { bpf_probe_read_user(addr as *const u64).ok() }
}

#[inline(always)]
fn read_i32(addr: u64) -> Option<i32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(addr as *const i32).ok() }
}

#[inline(always)]
fn read_u8(addr: u64) -> Option<u8> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(addr as *const u8).ok() }
}

/// A thread state's innermost frame.
#[inline(always)]
fn current_frame(cfg: &BlameConfig, tstate: u64) -> Option<u64> {
    let p = read_u64(tstate.wrapping_add(cfg.tstate_frame))?;
    if cfg.cframe_frame == BLAME_NO_OFFSET {
        return Some(p);
    }
    read_u64(p.wrapping_add(cfg.cframe_frame))
}

/// A walk in progress. Its state lives in map memory, read and written with volatile accesses,
/// not in registers: the verifier does not track values in map memory, so every iteration
/// starts from the same register state and the walk is verified in linear, not exponential,
/// time (kept in registers, `depth` and the read results made the paths diverge: over a million
/// instructions processed).
#[repr(C)]
struct Walk {
    frame: u64,
    hash: u64,
    depth: u64,
    stack: BlameStack,
}

#[map]
static BLAME_SCRATCH: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

macro_rules! get {
    ($p:expr) => {
        // SAFETY: a field of this CPU's scratch slot.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($p)) }
    };
}
macro_rules! set {
    ($p:expr, $v:expr) => {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!($p), $v) }
    };
}

/// Walks `tstate`'s frame chain into the per-CPU scratch and interns it; returns its id.
#[inline(always)]
fn stack_of(cfg: &BlameConfig, tstate: u64) -> Option<u64> {
    let started = now_ns();
    let w = BLAME_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot; nothing else runs on this CPU during the program.
    let w = unsafe { &mut *w };
    let first = match current_frame(cfg, tstate) {
        Some(f) => f,
        None => {
            count_error(BLAME_ERR_READ);
            0
        }
    };
    set!(w.frame, first);
    // FNV-1a over the words: collisions between two live stacks are out of reach at 2^64.
    set!(w.hash, 0xcbf2_9ce4_8422_2325u64);
    set!(w.depth, 0u64);
    set!(w.stack.truncated, 0u32);
    for _ in 0..MAX_VISITS {
        if walk_one(cfg, w) {
            break;
        }
    }
    let depth = get!(w.depth);
    if get!(w.frame) != 0 {
        // Frames left: past the kept ones, or among too many shims.
        set!(w.stack.truncated, 1u32);
    }
    set!(w.stack.depth, depth as u32);
    let id = (get!(w.hash) ^ u64::from(get!(w.stack.truncated))) | 1;
    // The id is never 0 (an empty slot reads as 0): the `| 1` above.
    if BLAME_STACKS.get_ptr(&id).is_none() && BLAME_STACKS.insert(&id, &w.stack, 0).is_err() {
        count_error(BLAME_ERR_STACKS_FULL);
    }
    count(BLAME_WALKS, 1);
    count(BLAME_WALK_NS, now_ns().saturating_sub(started));
    Some(id)
}

/// One frame of the walk; true when it is over.
#[inline(always)]
fn walk_one(cfg: &BlameConfig, w: &mut Walk) -> bool {
    let frame = get!(w.frame);
    if frame == 0 {
        return true;
    }
    let skip = cfg.frame_owner != BLAME_NO_OFFSET
        && read_u8(frame.wrapping_add(cfg.frame_owner))
            .is_some_and(|o| u64::from(o) >= cfg.skip_owner_from);
    if !skip {
        let depth = get!(w.depth);
        if depth >= BLAME_MAX_FRAMES as u64 {
            return true;
        }
        let code = read_u64(frame.wrapping_add(cfg.frame_code)).unwrap_or(0) & !cfg.code_tag_mask;
        if code == 0 {
            count_error(BLAME_ERR_READ);
            set!(w.stack.truncated, 1u32);
            set!(w.frame, 0u64);
            return true;
        }
        let pos = if cfg.pos_is_ptr != 0 {
            read_u64(frame.wrapping_add(cfg.frame_pos)).unwrap_or(0)
        } else {
            read_i32(frame.wrapping_add(cfg.frame_pos)).unwrap_or(-1) as i64 as u64
        };
        if let Some(f) = w
            .stack
            .frames
            .get_mut((depth as usize) & (BLAME_MAX_FRAMES - 1))
        {
            set!(f.code, code);
            set!(f.pos, pos);
        }
        let mut hash = get!(w.hash);
        hash = (hash ^ code).wrapping_mul(0x0000_0100_0000_01b3);
        hash = (hash ^ pos).wrapping_mul(0x0000_0100_0000_01b3);
        set!(w.hash, hash);
        set!(w.depth, depth + 1);
    }
    match read_u64(frame.wrapping_add(cfg.frame_back)) {
        Some(f) => set!(w.frame, f),
        None => {
            set!(w.stack.truncated, 1u32);
            set!(w.frame, 0u64);
        }
    }
    false
}

#[inline(always)]
fn stat(map: &HashMap<BlameKey, BlameStat>, key: &BlameKey) -> Option<*mut BlameStat> {
    if let Some(p) = map.get_ptr_mut(key) {
        return Some(p);
    }
    if map.insert(key, &BlameStat::default(), 0).is_err() {
        count_error(BLAME_ERR_STATS_FULL);
        return None;
    }
    map.get_ptr_mut(key)
}

#[inline(always)]
fn add(map: &HashMap<BlameKey, BlameStat>, who: u64, stack: u64, ns: u64, samples: u64) {
    sampled(map, who, stack, ns, samples, 0);
}

#[inline(always)]
fn sampled(
    map: &HashMap<BlameKey, BlameStat>,
    who: u64,
    stack: u64,
    ns: u64,
    samples: u64,
    caused: u64,
) {
    if let Some(p) = stat(map, &BlameKey { who, stack }) {
        // SAFETY: a valid map value; concurrent updates of one key are the documented race.
        unsafe {
            (*p).total_ns += ns;
            (*p).samples += samples;
            (*p).caused_wait_ns += caused;
        }
    }
}

#[inline(always)]
fn close(map: &HashMap<BlameKey, BlameStat>, who: u64, stack: u64, ns: u64) {
    if let Some(p) = stat(map, &BlameKey { who, stack }) {
        // SAFETY: as above.
        unsafe {
            (*p).count += 1;
            if ns > (*p).max_ns {
                (*p).max_ns = ns;
            }
        }
    }
}

/// Called from gil_cond_wait_return (one line): a GIL timed wait of thread `tid` returned `ret`.
#[inline(always)]
pub(crate) fn timed_wait_returned(ret: i32, tid: u32, take_start: u64, tstate: u64) {
    let Some(cfg) = BLAME_CONFIG.get(0) else {
        return;
    };
    if cfg.enabled == 0 || take_start == 0 {
        return;
    }
    let timed_out = ret == ETIMEDOUT;
    let now = now_ns();
    if let Some(w) = BLAME_WAITING.get_ptr_mut(&tid) {
        // SAFETY: this thread's own entry; only this thread writes it.
        let (start, stack, last) = unsafe { ((*w).take_start_ns, (*w).stack, (*w).last_ns) };
        if start == take_start {
            add(
                &BLAME_WAITS,
                u64::from(tid),
                stack,
                now.saturating_sub(last),
                0,
            );
            if let Some(p) = stat(
                &BLAME_WAITS,
                &BlameKey {
                    who: u64::from(tid),
                    stack,
                },
            ) {
                // SAFETY: as in `add`.
                unsafe {
                    let so_far = now.saturating_sub(start);
                    if so_far > (*p).max_ns {
                        (*p).max_ns = so_far;
                    }
                }
            }
            // SAFETY: as above.
            unsafe { (*w).last_ns = now };
            if timed_out {
                sample_holder(cfg, now, now.saturating_sub(last));
            }
            return;
        }
    }
    if !timed_out {
        return;
    }
    // This wait's first timeout: what the waiter was about to do when it asked for the GIL.
    if tstate != 0 {
        if let Some(stack) = stack_of(cfg, tstate) {
            let waiting = BlameWaiting {
                take_start_ns: take_start,
                stack,
                last_ns: now,
            };
            if BLAME_WAITING.insert(&tid, &waiting, 0).is_err() {
                count_error(BLAME_ERR_WAITING_FULL);
            } else {
                let so_far = now.saturating_sub(take_start);
                add(&BLAME_WAITS, u64::from(tid), stack, so_far, 1);
                close(&BLAME_WAITS, u64::from(tid), stack, so_far);
            }
        }
    }
    sample_holder(cfg, now, now.saturating_sub(take_start));
}

/// The waiter timed out: sample the holder's stack.
#[inline(always)]
fn sample_holder(cfg: &BlameConfig, now: u64, waited: u64) {
    let cond = gil_addr(GIL_ADDR_COND);
    if cond == 0 {
        return;
    }
    let at = cond.wrapping_sub(cfg.cond_to_holder);
    // SAFETY: bpf_probe_read_user checks the address.
    let Ok(gil) = (unsafe { bpf_probe_read_user(at as *const [u64; 3]) }) else {
        count_error(BLAME_ERR_READ);
        return;
    };
    let (holder, locked, switch_number) = (gil[0], gil[1] as u32 as i32, gil[2]);
    if locked != 1 || holder == 0 {
        // Dropped while this thread was waking up: no one to blame.
        return;
    }
    let Some(stack) = stack_of(cfg, holder) else {
        return;
    };
    let Some(slot) = BLAME_HOLDER.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a valid slot of a one-element array (the race is documented above).
    unsafe {
        if (*slot).tstate == holder && (*slot).switch_number == switch_number {
            sampled(
                &BLAME_HOLDS,
                holder,
                stack,
                now.saturating_sub((*slot).last_ns),
                1,
                waited,
            );
            (*slot).last_ns = now;
            (*slot).last_stack = stack;
        } else {
            *slot = BlameHolder {
                tstate: holder,
                switch_number,
                first_ns: now,
                first_stack: stack,
                last_ns: now,
                last_stack: stack,
            };
            sampled(&BLAME_HOLDS, holder, stack, 0, 1, waited);
        }
    }
}

/// Called from gil_dropped (one line): the thread with `tstate` dropped a hold it took at
/// `acquired`. Closes the hold's blame if waiters sampled it.
#[inline(always)]
pub(crate) fn hold_ended(tstate: u64, acquired: u64, now: u64) {
    let Some(slot) = BLAME_HOLDER.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a valid slot of a one-element array.
    unsafe {
        if tstate == 0 || (*slot).tstate != tstate {
            return;
        }
        (*slot).tstate = 0;
        let (first, last) = ((*slot).first_ns, (*slot).last_ns);
        if first < acquired || last > now {
            // Samples of an earlier hold whose drop was not seen.
            return;
        }
        let (first_stack, last_stack) = ((*slot).first_stack, (*slot).last_stack);
        add(&BLAME_HOLDS, tstate, first_stack, first - acquired, 0);
        add(&BLAME_HOLDS, tstate, last_stack, now - last, 0);
        close(&BLAME_HOLDS, tstate, last_stack, now - acquired);
    }
}
