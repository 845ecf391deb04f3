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

/// `--trace`: one GIL span of one thread, as the histograms record it (observer-ebpf/src/trace.rs).
/// Timestamps are `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GilSpan {
    /// When the wait began (take_gil's entry); 0 when this record carries no wait.
    pub wait_start_ns: u64,
    /// When the thread got the GIL: the wait's end, the hold's start.
    pub acquired_ns: u64,
    /// When it let go; 0 when the hold goes on (a record of the wait alone).
    pub released_ns: u64,
    /// Kernel thread id.
    pub tid: u32,
    /// Reserved (0).
    pub flags: u32,
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
/// Processes one run can observe at once (`-p A -p B`, `--children`, `--all`): the per-process
/// maps (GIL_ADDRS, LAST_DROP) are keyed by tgid.
pub const MAX_PROCESSES: u32 = 1024;

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

// ---------------------------------------------------------------------------------------------
// Blame (observer-ebpf/src/blame.rs): which Python code held the GIL while others timed out
// waiting for it, and which code waited.

/// Python frames kept per stack (the innermost ones: a deeper stack is truncated at its root).
pub const BLAME_MAX_FRAMES: usize = 32;
/// An offset that does not apply to this version.
pub const BLAME_NO_OFFSET: u64 = u64::MAX;
/// Distinct stacks kept (a map that allocates as used, ~530 bytes a stack).
pub const BLAME_MAX_STACKS: u32 = 4096;
/// (thread, stack) entries in each of the hold and wait maps.
pub const BLAME_MAX_STATS: u32 = 8192;
/// Blame error counters.
pub const BLAME_ERR_STACKS_FULL: u32 = 0;
pub const BLAME_ERR_STATS_FULL: u32 = 1;
pub const BLAME_ERR_WAITING_FULL: u32 = 2;
/// A frame chain could not be read (the holder was changing it, or the offsets are wrong).
pub const BLAME_ERR_READ: u32 = 3;
/// Not errors: frame walks made, and the kernel time they took (ns, measured around each walk),
/// which the overhead budget counts (probe/cost.rs).
pub const BLAME_WALKS: u32 = 4;
pub const BLAME_WALK_NS: u32 = 5;
/// Slots of the blame counter array (BLAME_ERRORS): the errors are the first four.
pub const BLAME_ERR_COUNTERS: u32 = 6;

/// How to walk a CPython thread's frame chain, per version (written by userspace, blame/config.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlameConfig {
    /// 0: blame off (the programs return at once).
    pub enabled: u64,
    /// `&gil->last_holder` = `&gil->cond` (GIL_ADDRS) minus this; `locked` (int) and
    /// `switch_number` follow it.
    pub cond_to_holder: u64,
    /// Pointer in the thread state to the current frame (3.8–3.10 `frame`, 3.13+
    /// `current_frame`) or to the `_PyCFrame` (3.11–3.12 `cframe`).
    pub tstate_frame: u64,
    /// 3.11–3.12: `cframe->current_frame`; else BLAME_NO_OFFSET.
    pub cframe_frame: u64,
    /// `f_back` / `previous`.
    pub frame_back: u64,
    /// `f_code` / `f_executable`.
    pub frame_code: u64,
    /// `f_lasti` (an int) / `prev_instr` / `instr_ptr` (a pointer).
    pub frame_pos: u64,
    /// 1: the position is a pointer (3.11+); 0: a 32-bit int (f_lasti).
    pub pos_is_ptr: u64,
    /// `owner` (a char), or BLAME_NO_OFFSET.
    pub frame_owner: u64,
    /// Frames with `owner` ≥ this are not Python code (3.12+ C-stack and interpreter shims).
    pub skip_owner_from: u64,
    /// Low bits of `f_executable` that tag a `_PyStackRef` (3.14+), cleared before use.
    pub code_tag_mask: u64,
}

/// One Python frame as the kernel read it: the code object's address and the raw position
/// (python/code.rs `InstrPosition`: f_lasti or an instruction pointer, per version).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlameFrame {
    pub code: u64,
    pub pos: u64,
}

/// A stack, innermost frame first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlameStack {
    pub depth: u32,
    /// 1 when the chain went on past BLAME_MAX_FRAMES (or did not end cleanly).
    pub truncated: u32,
    pub frames: [BlameFrame; BLAME_MAX_FRAMES],
}

/// Key of the hold and wait blame maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlameKey {
    /// Holds: the holder's `PyThreadState*` (a waiter reads it from `gil->last_holder`, without
    /// knowing the holder's TID); waits: the waiter's TID.
    pub who: u64,
    /// Stack id (BLAME_STACKS key).
    pub stack: u64,
}

/// What one (thread, stack) accumulated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlameStat {
    /// Time attributed to the stack: holds, from the acquisition to the first sample, between
    /// samples (to the later sample's stack) and from the last sample to the drop; waits, the
    /// whole wait from take_gil's entry to the last wake-up.
    pub total_ns: u64,
    /// Timeouts that sampled this stack.
    pub samples: u64,
    /// Holds whose last sample was this stack (counted at the drop) / waits that first timed
    /// out here.
    pub count: u64,
    /// Longest such hold / wait.
    pub max_ns: u64,
    /// Holds only: the waiting of the timed waits that expired while this stack held the GIL
    /// (each sample adds its waiter's time since its previous wake-up or take_gil entry).
    pub caused_wait_ns: u64,
}

/// The hold the waiters are sampling now.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlameHolder {
    pub tstate: u64,
    /// `gil->switch_number` when sampled: the hold's identity.
    pub switch_number: u64,
    pub first_ns: u64,
    pub first_stack: u64,
    pub last_ns: u64,
    pub last_stack: u64,
}

/// A waiter's wait that timed out at least once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlameWaiting {
    /// ThreadGilState::take_start_ns of the wait: a later take is another wait.
    pub take_start_ns: u64,
    pub stack: u64,
    /// Up to when the wait is attributed (its last wake-up so far).
    pub last_ns: u64,
}

// ---------------------------------------------------------------------------------------------
// Why the GIL changed hands (observer-ebpf/src/handoff.rs) and GIL held off-CPU (offcpu.rs).

/// Slots of the handoff configuration array (written by userspace once the GIL is found).
/// The address of `gil->locked` (an int; `last_holder` is 8 bytes before it, `switch_number`
/// 8 bytes after it in every GIL layout).
pub const HANDOFF_CFG_LOCKED: u32 = 0;
pub const HANDOFF_CFG_SLOTS: u32 = 1;

/// Keys of the kernel's handoff histograms.
/// From a forced drop to the next acquisition (by any thread): the convoy effect.
pub const HANDOFF_HIST_FORCED_LATENCY: u32 = 0;
/// Off-CPU spans of the GIL's holder: blocked (sleeping in the kernel) and runnable (preempted,
/// waiting for a CPU).
pub const HANDOFF_HIST_OFFCPU_BLOCKED: u32 = 1;
pub const HANDOFF_HIST_OFFCPU_RUNNABLE: u32 = 2;
pub const HANDOFF_HISTS: u32 = 3;

/// Distinct (from, to) thread pairs kept in the handoff matrix; more are counted as lost.
pub const MAX_HANDOFF_PAIRS: u32 = 4096;

/// Key of the handoff matrix: the thread that dropped the GIL last and the one that took it next.
/// `from` is 0 when the previous drop was not seen (before attach).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HandoffKey {
    pub from: u32,
    pub to: u32,
}

/// One cell of the handoff matrix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HandoffPair {
    /// Acquisitions by `to` right after a drop by `from`.
    pub count: u64,
    /// `to`'s summed wait for those acquisitions.
    pub wait_ns: u64,
}

/// Why one thread's holds ended, and what its own requests for the GIL did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadHandoff {
    /// Drops while a waiter's drop request was pending (made during this hold): the switch
    /// interval forced them.
    pub forced_drops: u64,
    /// Drops nobody asked for: I/O, sleep, a C extension releasing the GIL, the thread's end.
    pub voluntary_drops: u64,
    /// This thread's timed waits for the GIL that expired and asked the holder to drop it.
    pub drop_requests: u64,
    /// Forced drops this thread asked for whose GIL another thread took.
    pub requests_lost: u64,
    /// Kernel only: `switch_number + 1` when the thread's current timed wait began (0: unknown).
    pub wait_switch: u64,
    /// `--offcpu` (offcpu.rs): holds interrupted by the scheduler. Switched out in a sleeping
    /// state (blocking syscall, page fault, `sleep` without releasing the GIL): count and summed
    /// time until the thread ran again.
    pub offcpu_blocked_count: u64,
    pub offcpu_blocked_ns: u64,
    /// Preempted while runnable (CPU starvation, cgroup throttling).
    pub offcpu_runnable_count: u64,
    pub offcpu_runnable_ns: u64,
}

/// The GIL's handoff state between drops (one entry). Kernel bookkeeping, except `pairs_lost`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HandoffState {
    /// When the GIL was last dropped.
    pub drop_ns: u64,
    /// When a waiter asked the holder to drop (0: no request pending).
    pub request_ns: u64,
    /// Acquisitions whose matrix cell could not be stored (the pair map was full).
    pub pairs_lost: u64,
    pub last_dropper: u32,
    /// The thread whose request is pending.
    pub requester: u32,
    /// The requester of the last drop if it was forced, else 0.
    pub last_requester: u32,
    /// 1 if the last drop was forced and the acquisition after it is not yet seen.
    pub last_drop_forced: u32,
}

/// The off-CPU tracker's one slot: the target and the holder currently switched out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpuState {
    /// The target's process id (userspace writes it; 0 = off).
    pub tgid: u64,
    /// The holder's `task_struct*` while it is switched out, else 0.
    pub task: u64,
    pub start_ns: u64,
    pub tid: u32,
    pub blocked: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all three are #[repr(C)] structs of integers with no padding and no invalid bit
    // patterns, which is what aya::Pod requires to copy them in and out of maps.
    unsafe impl aya::Pod for super::StatKey {}
    unsafe impl aya::Pod for super::Histogram {}
    unsafe impl aya::Pod for super::ThreadGilState {}
    unsafe impl aya::Pod for super::GilSpan {}
    // SAFETY: the same holds for the mutex types (explicit padding fields, no implicit padding).
    unsafe impl aya::Pod for super::MutexKey {}
    unsafe impl aya::Pod for super::MutexCounts {}
    unsafe impl aya::Pod for super::MutexPending {}
    unsafe impl aya::Pod for super::MutexHeld {}
    unsafe impl aya::Pod for super::MutexSiteKey {}
    unsafe impl aya::Pod for super::MutexSite {}
    // SAFETY: the blame types are #[repr(C)] u64/u32 fields with no padding.
    unsafe impl aya::Pod for super::BlameConfig {}
    unsafe impl aya::Pod for super::BlameFrame {}
    unsafe impl aya::Pod for super::BlameStack {}
    unsafe impl aya::Pod for super::BlameKey {}
    unsafe impl aya::Pod for super::BlameStat {}
    unsafe impl aya::Pod for super::BlameHolder {}
    unsafe impl aya::Pod for super::BlameWaiting {}
    // SAFETY: the same holds for the handoff and off-CPU types (u64s first, then u32 pairs).
    unsafe impl aya::Pod for super::HandoffKey {}
    unsafe impl aya::Pod for super::HandoffPair {}
    unsafe impl aya::Pod for super::ThreadHandoff {}
    unsafe impl aya::Pod for super::HandoffState {}
    unsafe impl aya::Pod for super::OffCpuState {}
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
