//! The drop half of the `exports` strategy (stripped builds, observer/src/gil/exports.rs): where
//! drop_gil is inlined into its callers there is no function entry to probe, but every copy of it
//! signals the GIL's condition variable, `pthread_cond_signal(&gil->cond)`, and nothing else
//! signals that one (take_gil signals `switch_cond`). glibc's pthread_cond_signal starts with an
//! instruction the kernel emulates, so this is one cheap trap per drop, filtered here by address.
//!
//! The signal comes after drop_gil has cleared `locked`, with gil->mutex held: no other thread
//! can finish taking the GIL before this program has run.
use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use observer_common::GIL_ADDR_COND;

use crate::{current_tid, gil_dropped, gil_libc::gil_addr};

#[uprobe]
pub fn gil_cond_signal_drop(ctx: ProbeContext) -> u32 {
    let cond: u64 = ctx.arg(0).unwrap_or(0);
    // Until userspace has found the GIL (`-- CMD`, the first milliseconds) no signal is known
    // to be the GIL's: ignore them all rather than take another condition's for a drop.
    let gil_cond = gil_addr(GIL_ADDR_COND);
    if gil_cond == 0 || cond != gil_cond {
        return 0;
    }
    gil_dropped(current_tid());
    0
}
