//! Types shared by the kernel programs (`observer-ebpf`) and the userspace observer.
//!
//! Everything here is `#[repr(C)]` plain data: the same bytes are written by BPF programs into
//! maps and read back by userspace, so the layout must not depend on the compiler's choices.
#![no_std]

pub mod names;

/// Linear sub-buckets per power of two, as a bit count: 3 bits = 8 sub-buckets, so a bucket spans
/// at most 1/8 of its power of two (12.5%): fine enough to tell 4 ms from 5 ms from 7 ms.
pub const HIST_SUB_BITS: u32 = 3;
const HIST_SUB: u64 = 1 << HIST_SUB_BITS;
/// Values 0..8 get a bucket each; above that, 8 per power of two up to 2^64 needs 496 buckets.
/// The array is a power of two so the kernel side can bound an index with a mask the verifier
/// understands, whatever the compiler did to the arithmetic before it.
pub const HIST_BUCKETS: usize = 512;

/// What a [`StatKey`] accumulates.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatKind {
    /// From entering `take_gil` to returning from it with the GIL.
    Wait = 0,
    /// From returning from `take_gil` to entering `drop_gil`.
    Hold = 1,
}

/// Key of the kernel's per-thread statistics map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatKey {
    /// Kernel thread id (what userspace calls TID, the kernel calls pid).
    pub tid: u32,
    /// A [`StatKind`] as u32.
    pub kind: u32,
}

/// A latency distribution, aggregated in the kernel. Count, total and max are exact; the buckets
/// are log-linear (see [`bucket_index`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Histogram {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub buckets: [u64; HIST_BUCKETS],
}

/// Per-thread state the kernel programs keep between probe hits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadGilState {
    /// `bpf_ktime_get_ns()` when the thread entered take_gil, 0 when not waiting.
    pub take_start_ns: u64,
    /// When the thread got the GIL, 0 when it does not hold it (or got it before we attached).
    pub hold_start_ns: u64,
    /// The `PyThreadState*` take_gil was called with: pairs the kernel TID with the interpreter's
    /// thread state, which is how userspace finds the Python thread name on every version.
    pub tstate: u64,
}

/// Indexes of the kernel's error counters (a per-CPU array).
pub const ERR_STATS_MAP_FULL: u32 = 0;
pub const ERR_THREADS_MAP_FULL: u32 = 1;
pub const ERR_COUNTERS: u32 = 2;

/// Slots of the kernel's per-site trap counters (observer-ebpf/src/site_hits.rs): distinct
/// probed instructions and uretprobe returns of one run.
pub const MAX_SITES: u32 = 256;

/// Slots of the kernel's GIL_ADDRS array (the symbol-free strategy's filter addresses).
pub const GIL_ADDR_MUTEX: u32 = 0;
pub const GIL_ADDR_COND: u32 = 1;
pub const GIL_ADDR_SWITCH_MUTEX: u32 = 2;
pub const GIL_ADDR_SLOTS: u32 = 3;

/// Map capacities, shared so userspace can say what a full map means. Both maps allocate entries
/// as they are used; a full map makes the kernel program count the event as lost.
pub const MAX_THREADS: u32 = 16384;
pub const MAX_STATS: u32 = 2 * MAX_THREADS;

/// floor(log2(v)) for v > 0, without loops or count-leading-zeros (which BPF lacks).
#[inline(always)]
pub fn log2_floor(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Log-linear bucket of a value: exact below 8, then 8 equal sub-buckets per power of two.
#[inline(always)]
pub fn bucket_index(v: u64) -> usize {
    if v < HIST_SUB {
        return v as usize;
    }
    let e = log2_floor(v);
    let sub = (v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1);
    ((e - HIST_SUB_BITS + 1) as u64 * HIST_SUB + sub) as usize
}

/// The smallest value that falls in bucket `i`.
pub fn bucket_lower(i: usize) -> u64 {
    let i = i as u64;
    if i < HIST_SUB {
        return i;
    }
    let e = i / HIST_SUB + HIST_SUB_BITS as u64 - 1;
    let sub = i % HIST_SUB;
    (HIST_SUB + sub) << (e - HIST_SUB_BITS as u64)
}

/// One past the largest value in bucket `i` (saturating at u64::MAX for the last one).
pub fn bucket_upper(i: usize) -> u64 {
    if i + 1 >= HIST_BUCKETS || bucket_lower(i + 1) == 0 {
        return u64::MAX;
    }
    bucket_lower(i + 1)
}

// ---------------------------------------------------------------------------------------------
// Named mutexes (`--lock`, `--lock-fns`, `--mutexes`): see observer-ebpf/src/mutex.rs.

/// What a [`MutexKey`] accumulates in the mutex statistics map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutexStatKind {
    /// From entering a lock call to returning from it with the lock (outermost acquisitions only).
    Wait = 0,
    /// From acquiring the lock to releasing it (outermost unlock of a recursive mutex), or to
    /// entering `pthread_cond_*wait`, which releases it.
    Hold = 1,
    /// Inside `pthread_cond_wait`/`timedwait` (mutex released and re-taken inside): neither hold
    /// nor lock wait.
    CondWait = 2,
    /// A lock call that returned without the lock (timedlock timeout, error): how long it tried.
    FailedWait = 3,
}

/// Key of the per-(lock, thread) maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MutexKey {
    /// Address of the lock in the target (the `pthread_mutex_t*`, or the custom lock's argument).
    pub addr: u64,
    pub tid: u32,
    /// A [`MutexStatKind`] as u32 (0 in maps that are not per kind).
    pub kind: u32,
}

/// Event counts per (lock, thread) that the histograms do not carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MutexCounts {
    /// Outermost acquisitions (lock, successful trylock/timedlock, custom acquire).
    pub acquisitions: u64,
    /// Acquisitions whose call slept in the kernel (a futex syscall while acquiring).
    pub contended: u64,
    /// `pthread_mutex_trylock` calls that found the lock taken (EBUSY).
    pub trylock_busy: u64,
    /// Lock calls that returned an error (timedlock ETIMEDOUT, EDEADLK, …).
    pub failed: u64,
    /// Re-acquisitions of a lock the thread already held (recursive mutexes): no wait, no new hold.
    pub recursive: u64,
    /// The thread's name (comm) when it first used the lock: threads that exit before the report
    /// keep their name.
    pub comm: [u8; 16],
}

/// A lock call in progress on one thread (between its entry and return probes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MutexPending {
    pub addr: u64,
    pub start_ns: u64,
    /// The lock call's return address (`--mutexes` only): the call site itself, which a stack
    /// walk from a function's first instruction can miss (the caller's frame is not set up yet).
    pub caller: u64,
    /// A `MUTEX_OP_*`.
    pub op: u32,
    /// 1 once the call made a futex syscall.
    pub contended: u32,
}

/// One thread's acquisition and hold of one lock: created by the lock call's entry, which starts
/// the wait and, tentatively, the hold (an uncontended lock has it at once); a futex wait on the
/// lock's word moves the hold's start to its return (the wake-up); the unlock's entry records
/// both. Kept (with `depth` 0) between holds, so the hot path allocates nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MutexHeld {
    /// When the hold began (tentatively, while `acquiring`); 0 while not held, or paused inside
    /// a condition wait.
    pub start_ns: u64,
    /// Recursion depth: the hold ends when it falls back to 0.
    pub depth: u64,
    /// When the lock call began; 0 once its wait is recorded.
    pub wait_start_ns: u64,
    /// The lock call's return address (`--mutexes`), or 0.
    pub caller: u64,
    /// 1 while the lock call may still be under way (plain lock, no return probe): futex waits
    /// on the lock's word are its contended wait.
    pub acquiring: u32,
    /// 1 once the acquisition slept in the kernel.
    pub contended: u32,
    /// Python locks (`--py-locks`): the thread that holds it. Their holds are kept per lock,
    /// not per thread (key tid 0): a `threading.Lock` may be released by another thread than
    /// the one that took it (a Condition's waiter lock is released by the notifier).
    pub holder: u32,
    pub _pad: u32,
}

/// Key of the call-site map (`--mutexes`): a lock and the return address of the call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MutexSiteKey {
    pub addr: u64,
    /// [`MutexPending::caller`].
    pub caller: u64,
}

/// What one call site did to one lock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MutexSite {
    pub acquisitions: u64,
    pub contended: u64,
    pub wait_ns: u64,
    /// The stack of the site's first call (a stack walk per call would cost more than the
    /// probe's trap), or -1 if it could not be stored.
    pub stack_id: i64,
}

/// Lock operations, as stored in [`MutexPending::op`].
pub const MUTEX_OP_LOCK: u32 = 0;
pub const MUTEX_OP_TRYLOCK: u32 = 1;
pub const MUTEX_OP_TIMEDLOCK: u32 = 2;
pub const MUTEX_OP_COND_WAIT: u32 = 3;
/// A custom acquire function (`--lock-fns`): every return is an acquisition.
pub const MUTEX_OP_CUSTOM: u32 = 4;
/// Python locks (`--py-locks`, semaphores): a non-blocking try (`sem_trywait`) whose outcome is
/// not known yet (no return probe). A blocking call that follows on the same lock (CPython's
/// `acquire_timed`: a try with the GIL held, then a blocking wait with the GIL released)
/// continues the same acquisition.
pub const MUTEX_OP_PY_TRY: u32 = 5;
/// A blocking wait (`sem_wait`, `sem_timedwait`, `sem_clockwait`), under way.
pub const MUTEX_OP_PY_WAIT: u32 = 6;

/// Set in the lock address of custom lock instances (`--lock-fns`), which are keyed apart from
/// pthread mutexes (user addresses are below 2^47 on x86_64, so the bit is free).
pub const MUTEX_CUSTOM_TAG: u64 = 1 << 63;
/// Custom instances also carry the index of their `--lock-fns` pair in bits 56..62.
pub const MUTEX_CUSTOM_PAIR_SHIFT: u32 = 56;
/// The bits of a custom instance that are the function's argument.
pub const MUTEX_CUSTOM_ADDR_MASK: u64 = (1 << MUTEX_CUSTOM_PAIR_SHIFT) - 1;
/// The pair index that marks Python locks (`--py-locks`): `--lock-fns` pairs stay below it.
pub const MUTEX_PY_PAIR: u64 = 0x7f;
/// The attach cookie of the Python lock programs on a blocking wait (0: `sem_trywait`).
pub const PY_LOCK_COOKIE_BLOCKING: u64 = 1;

/// Slots of the mutex configuration array.
/// 1: track every lock address (`--mutexes`); 0: only the addresses in the watch map.
pub const MUTEX_CFG_ALL: u32 = 0;
/// The target's process id (tgid): the futex tracepoint ignores every other process.
pub const MUTEX_CFG_TGID: u32 = 1;
/// 1: record call-site stacks.
pub const MUTEX_CFG_STACKS: u32 = 2;
/// 1 once every probe is attached: no lock call is tracked before, so no acquisition is seen
/// whose release could still be missed by a probe not yet in place.
pub const MUTEX_CFG_ARMED: u32 = 3;
pub const MUTEX_CFG_SLOTS: u32 = 4;

/// Offset of `__data.__kind` in glibc's x86_64 `pthread_mutex_t`, and the mask of its type bits
/// (`PTHREAD_MUTEX_KIND_MASK_NP`); type 1 is `PTHREAD_MUTEX_RECURSIVE`.
pub const PTHREAD_MUTEX_KIND_OFFSET: u64 = 16;
pub const PTHREAD_MUTEX_KIND_MASK: i32 = 3;
pub const PTHREAD_MUTEX_RECURSIVE: i32 = 1;

/// Indexes of the mutex error counters.
pub const MUTEX_ERR_STATS_FULL: u32 = 0;
pub const MUTEX_ERR_STATE_FULL: u32 = 1;
/// A call site's stack could not be stored (stack map full or a hash collision): the site is
/// counted, and named by its caller alone.
pub const MUTEX_ERR_STACK_LOST: u32 = 2;
pub const MUTEX_ERR_COUNTERS: u32 = 3;

/// Capacity of the per-(lock, thread, kind) statistics map and of the per-(lock, thread) maps:
/// all allocate entries as they are used (only their hash buckets, 16 bytes a slot, are
/// allocated up front). Without a lock option userspace shrinks every lock map to one entry.
pub const MUTEX_MAX_STATS: u32 = 32768;
/// Distinct call stacks kept for `--mutexes` (a stack map is preallocated: about 1 KiB each).
pub const MUTEX_MAX_STACKS: u32 = 512;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all three are #[repr(C)] structs of integers with no padding and no invalid bit
    // patterns, which is what aya::Pod requires to copy them in and out of maps.
    unsafe impl aya::Pod for super::StatKey {}
    unsafe impl aya::Pod for super::Histogram {}
    unsafe impl aya::Pod for super::ThreadGilState {}
    // SAFETY: the same holds for the mutex types (explicit padding fields, no implicit padding).
    unsafe impl aya::Pod for super::MutexKey {}
    unsafe impl aya::Pod for super::MutexCounts {}
    unsafe impl aya::Pod for super::MutexPending {}
    unsafe impl aya::Pod for super::MutexHeld {}
    unsafe impl aya::Pod for super::MutexSiteKey {}
    unsafe impl aya::Pod for super::MutexSite {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_contain_their_values() {
        for i in 0..(bucket_index(u64::MAX)) {
            assert_eq!(bucket_upper(i), bucket_lower(i + 1), "gap after bucket {i}");
        }
        for v in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            1000,
            4_999_999,
            5_000_000,
            1 << 40,
            u64::MAX,
        ] {
            let i = bucket_index(v);
            assert!(bucket_lower(i) <= v, "{v} below bucket {i}");
            assert!(
                v < bucket_upper(i) || bucket_upper(i) == u64::MAX,
                "{v} above bucket {i}"
            );
        }
        assert!(bucket_index(u64::MAX) < HIST_BUCKETS);
    }

    #[test]
    fn buckets_are_at_most_an_eighth_of_their_power_of_two() {
        for i in 16..bucket_index(1 << 62) {
            let width = bucket_upper(i) - bucket_lower(i);
            assert!(width * 8 <= bucket_lower(i), "bucket {i} too wide");
        }
        // 4 ms and 5 ms and 7 ms land in different buckets.
        let b = |ms: u64| bucket_index(ms * 1_000_000);
        assert!(b(4) < b(5) && b(5) < b(7));
    }

    #[test]
    fn log2_matches_leading_zeros() {
        for s in 0..64 {
            for v in [1u64 << s, (1u64 << s) | 1, ((1u64 << s) - 1).max(1)] {
                assert_eq!(log2_floor(v), 63 - v.leading_zeros(), "v={v}");
            }
        }
    }
}
