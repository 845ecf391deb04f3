//! Probe traps counted per site, for the cost model (observer/src/probe/cost.rs): one counting
//! program beside the others on every probed instruction. Programs at one site share its trap,
//! so counting per site (not per program) counts each trap once, and userspace knows each site's
//! kind (emulated or single-stepped) from where it put it. The attach cookie is the site's slot.
use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_get_attach_cookie,
    macros::{map, uprobe, uretprobe},
    maps::PerCpuArray,
    programs::{ProbeContext, RetProbeContext},
};
use observer_common::MAX_SITES;

#[map]
static SITE_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_SITES, 0);

#[inline(always)]
fn count(cookie: u64) {
    if let Some(c) = SITE_HITS.get_ptr_mut(cookie as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

#[uprobe]
pub fn site_hit(ctx: ProbeContext) -> u32 {
    // SAFETY: the helper only reads the cookie of the current attachment.
    count(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    0
}

/// A uretprobe's return (its entry trap is counted by `site_hit` at the entry).
#[uretprobe]
pub fn site_return_hit(ctx: RetProbeContext) -> u32 {
    // SAFETY: as above.
    count(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    0
}
