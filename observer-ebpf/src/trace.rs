//! `--trace`: one record per GIL span, as the histograms record it, into a ring buffer that
//! userspace drains into a timeline.
//!
//! Off unless userspace loaded the object with `TRACE_ON` = 1: the flag lives in `.rodata`,
//! which the kernel freezes at load, so the verifier sees a constant and prunes the disabled
//! branch; an untraced run pays nothing, not even a map lookup.
//!
//! A record is written where a wait or hold is recorded in a histogram, with the same
//! timestamps: the acquisition of a contended take is only known at drop_gil (the last wake-up),
//! so a drop writes the wait and the hold together. Summed, the records are the histograms'
//! totals. Records are written without waking the reader (it polls): a wake-up per GIL cycle
//! would cost more than the record.
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use observer_common::GilSpan;

/// Set to 1 by userspace at load (`EbpfLoader::override_global`) when tracing.
#[unsafe(no_mangle)]
static TRACE_ON: u32 = 0;

/// The records. One page unless tracing (userspace sizes it then).
#[map]
static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Records lost because the ring buffer was full.
#[map]
static TRACE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// A span of thread `tid` ended: its wait from `wait_start` (0: none in this record) to
/// `acquired`, its hold from `acquired` to `released` (0: the hold goes on).
#[inline(always)]
pub(crate) fn span(tid: u32, wait_start: u64, acquired: u64, released: u64) {
    // SAFETY: a read of a static the kernel may have patched at load; volatile so the compiler
    // cannot fold the default 0 into the code.
    if unsafe { core::ptr::read_volatile(&TRACE_ON) } == 0 {
        return;
    }
    let rec = GilSpan {
        wait_start_ns: wait_start,
        acquired_ns: acquired,
        released_ns: released,
        tid,
        flags: 0,
    };
    if TRACE_EVENTS
        .output::<GilSpan>(&rec, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        if let Some(c) = TRACE_LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
            unsafe { *c += 1 };
        }
    }
}
