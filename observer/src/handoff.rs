//! Why the GIL changed hands, and GIL held off-CPU: what the kernel's handoff and off-CPU maps
//! hold (observer-ebpf/src/handoff.rs, offcpu.rs), read at one moment, and what to tell them.
use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData},
};
use observer_common::{
    HANDOFF_CFG_LOCKED, HANDOFF_HIST_FORCED_LATENCY, HANDOFF_HIST_OFFCPU_BLOCKED,
    HANDOFF_HIST_OFFCPU_RUNNABLE, HandoffKey, HandoffPair, HandoffState, Histogram, OffCpuState,
    ThreadHandoff,
    names::{map, program},
};

use crate::histogram::Distribution;

/// One thread's drop kinds, requests, and off-CPU holds (cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThreadCounts {
    pub forced_drops: u64,
    pub voluntary_drops: u64,
    pub drop_requests: u64,
    pub requests_lost: u64,
    pub offcpu_blocked_count: u64,
    pub offcpu_blocked_ns: u64,
    pub offcpu_runnable_count: u64,
    pub offcpu_runnable_ns: u64,
}

impl ThreadCounts {
    fn since(&self, e: &ThreadCounts) -> ThreadCounts {
        ThreadCounts {
            forced_drops: self.forced_drops.saturating_sub(e.forced_drops),
            voluntary_drops: self.voluntary_drops.saturating_sub(e.voluntary_drops),
            drop_requests: self.drop_requests.saturating_sub(e.drop_requests),
            requests_lost: self.requests_lost.saturating_sub(e.requests_lost),
            offcpu_blocked_count: self
                .offcpu_blocked_count
                .saturating_sub(e.offcpu_blocked_count),
            offcpu_blocked_ns: self.offcpu_blocked_ns.saturating_sub(e.offcpu_blocked_ns),
            offcpu_runnable_count: self
                .offcpu_runnable_count
                .saturating_sub(e.offcpu_runnable_count),
            offcpu_runnable_ns: self.offcpu_runnable_ns.saturating_sub(e.offcpu_runnable_ns),
        }
    }
}

/// (count, summed wait of the taker).
pub type PairCounts = (u64, u64);

/// Everything the handoff maps had at one moment (cumulative since attach).
#[derive(Clone, Default)]
pub struct HandoffSample {
    pub threads: BTreeMap<u32, ThreadCounts>,
    /// (from, to) → acquisitions by `to` right after a drop by `from` (0: a drop not seen).
    pub pairs: HashMap<(u32, u32), PairCounts>,
    pub pairs_lost: u64,
    /// From a forced drop to the next acquisition.
    pub forced_latency: Distribution,
    pub offcpu_blocked: Distribution,
    pub offcpu_runnable: Distribution,
}

impl HandoffSample {
    /// What happened since `earlier`.
    pub fn since(&self, earlier: &HandoffSample) -> HandoffSample {
        let zero = ThreadCounts::default();
        HandoffSample {
            threads: self
                .threads
                .iter()
                .map(|(tid, c)| (*tid, c.since(earlier.threads.get(tid).unwrap_or(&zero))))
                .collect(),
            pairs: self
                .pairs
                .iter()
                .map(|(k, &(n, w))| {
                    let (n0, w0) = earlier.pairs.get(k).copied().unwrap_or((0, 0));
                    (*k, (n.saturating_sub(n0), w.saturating_sub(w0)))
                })
                .filter(|(_, (n, _))| *n > 0)
                .collect(),
            pairs_lost: self.pairs_lost.saturating_sub(earlier.pairs_lost),
            forced_latency: self.forced_latency.since(&earlier.forced_latency),
            offcpu_blocked: self.offcpu_blocked.since(&earlier.offcpu_blocked),
            offcpu_runnable: self.offcpu_runnable.since(&earlier.offcpu_runnable),
        }
    }
}

fn hash_map<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a Ebpf,
    name: &str,
) -> anyhow::Result<BpfHashMap<&'a MapData, K, V>> {
    let m = ebpf
        .map(name)
        .with_context(|| format!("{name} map missing"))?;
    Ok(BpfHashMap::try_from(m)?)
}

/// Reads the handoff and off-CPU maps.
pub fn read(ebpf: &Ebpf) -> anyhow::Result<HandoffSample> {
    let mut s = HandoffSample::default();
    let threads: BpfHashMap<_, u32, ThreadHandoff> = hash_map(ebpf, map::HANDOFF_THREADS)?;
    // An entry can vanish between listing keys and reading it; skip it this round.
    for (tid, t) in threads.iter().filter_map(Result::ok) {
        let c = s.threads.entry(tid).or_default();
        c.forced_drops = t.forced_drops;
        c.voluntary_drops = t.voluntary_drops;
        c.drop_requests = t.drop_requests;
        c.requests_lost = t.requests_lost;
        c.offcpu_blocked_count = t.offcpu_blocked_count;
        c.offcpu_blocked_ns = t.offcpu_blocked_ns;
        c.offcpu_runnable_count = t.offcpu_runnable_count;
        c.offcpu_runnable_ns = t.offcpu_runnable_ns;
    }
    let pairs: BpfHashMap<_, HandoffKey, HandoffPair> = hash_map(ebpf, map::HANDOFF_PAIRS)?;
    for (k, p) in pairs.iter().filter_map(Result::ok) {
        s.pairs.insert((k.from, k.to), (p.count, p.wait_ns));
    }
    let hists: BpfHashMap<_, u32, Histogram> = hash_map(ebpf, map::HANDOFF_HIST)?;
    for (k, h) in hists.iter().filter_map(Result::ok) {
        let d = Distribution::from(&h);
        match k {
            HANDOFF_HIST_FORCED_LATENCY => s.forced_latency = d,
            HANDOFF_HIST_OFFCPU_BLOCKED => s.offcpu_blocked = d,
            HANDOFF_HIST_OFFCPU_RUNNABLE => s.offcpu_runnable = d,
            _ => {}
        }
    }
    let state: Array<&MapData, HandoffState> = Array::try_from(
        ebpf.map(map::HANDOFF_STATE)
            .context("HANDOFF_STATE map missing")?,
    )?;
    s.pairs_lost = state.get(&0, 0).map_or(0, |g| g.pairs_lost);
    Ok(s)
}

/// Tells the handoff programs where the GIL's `locked` field is: they then test a timed-out
/// wait as CPython does before counting it as a drop request, and the off-CPU tracker checks
/// that a thread it sees switched out is the GIL's holder.
pub fn set_gil_locked(ebpf: &mut Ebpf, locked_addr: u64) -> anyhow::Result<()> {
    let m = ebpf
        .map_mut(map::HANDOFF_CFG)
        .context("HANDOFF_CFG map missing")?;
    let mut cfg: Array<&mut MapData, u64> = Array::try_from(m)?;
    cfg.set(HANDOFF_CFG_LOCKED, locked_addr, 0)
        .context("writing the GIL's address to the kernel")
}

/// `--offcpu`: attaches the sched_switch tracker for process `tgid`.
pub fn attach_offcpu(ebpf: &mut Ebpf, tgid: u32) -> anyhow::Result<()> {
    {
        let m = ebpf.map_mut(map::OFFCPU).context("OFFCPU map missing")?;
        let mut slot: Array<&mut MapData, OffCpuState> = Array::try_from(m)?;
        let state = OffCpuState {
            tgid: u64::from(tgid),
            ..OffCpuState::default()
        };
        slot.set(0, state, 0)
            .context("writing the target to the off-CPU tracker")?;
    }
    crate::probe::attach::attach_raw_tracepoint(ebpf, program::GIL_OFFCPU_SWITCH, "sched_switch")
}

/// Before the probes go (back) in: the last drop the kernel saw, and any request pending then,
/// lie before a window the probes were out (duty cycling), so they must not be paired with the
/// next acquisition (a "handoff" across the gap, a latency of the whole gap).
pub fn forget_last_drop(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let m = ebpf
        .map_mut(map::HANDOFF_STATE)
        .context("HANDOFF_STATE map missing")?;
    let mut state: Array<&mut MapData, HandoffState> = Array::try_from(m)?;
    let pairs_lost = state.get(&0, 0).map_or(0, |g| g.pairs_lost);
    let fresh = HandoffState {
        pairs_lost,
        ..HandoffState::default()
    };
    state
        .set(0, fresh, 0)
        .context("resetting the kernel's handoff state")
}
