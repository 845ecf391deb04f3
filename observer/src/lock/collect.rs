//! Step 5 for locks: read what the kernel aggregated per (lock, thread).
use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, StackTraceMap},
};
use observer_common::{
    Histogram, MUTEX_ERR_STACK_LOST, MUTEX_ERR_STATE_FULL, MUTEX_ERR_STATS_FULL, MutexCounts,
    MutexKey, MutexSite, MutexSiteKey, MutexStatKind, names::map,
};

use crate::{collect::monotonic_ns, histogram::Distribution};

/// One thread's cumulative numbers for one lock.
#[derive(Clone, Default)]
pub struct ThreadLockSample {
    pub counts: MutexCounts,
    pub wait: Distribution,
    pub hold: Distribution,
    pub cond_wait: Distribution,
    pub failed_wait: Distribution,
}

/// What one call stack did to one lock.
#[derive(Clone, Copy)]
pub struct Site {
    pub addr: u64,
    /// Return address of the lock call.
    pub caller: u64,
    /// -1 when the stack could not be stored.
    pub stack_id: i64,
    pub numbers: MutexSite,
}

/// Everything the mutex maps had at one moment (cumulative since attach).
#[derive(Clone, Default)]
pub struct LockSnapshot {
    pub at_ns: u64,
    /// lock address (custom instances tagged) → tid → numbers.
    pub locks: BTreeMap<u64, BTreeMap<u32, ThreadLockSample>>,
    /// Call sites (`--mutexes`).
    pub sites: Vec<Site>,
    pub lost_events: u64,
    /// Call sites without a stack (`--mutexes`).
    pub call_site_stacks_lost: u64,
    /// Kernel memory of gilwatch's BPF maps now.
    pub kernel_memory_bytes: u64,
}

pub fn snapshot(ebpf: &Ebpf) -> anyhow::Result<LockSnapshot> {
    let mut snap = LockSnapshot {
        at_ns: monotonic_ns(),
        ..Default::default()
    };
    let stats: BpfHashMap<&MapData, MutexKey, Histogram> = BpfHashMap::try_from(
        ebpf.map(map::MUTEX_STATS)
            .context("MUTEX_STATS map missing")?,
    )?;
    for entry in stats.iter() {
        // An entry can vanish between listing keys and reading it; skip it this round.
        let Ok((key, hist)) = entry else { continue };
        let t = snap
            .locks
            .entry(key.addr)
            .or_default()
            .entry(key.tid)
            .or_default();
        let d = Distribution::from(&hist);
        match key.kind {
            k if k == MutexStatKind::Wait as u32 => t.wait = d,
            k if k == MutexStatKind::Hold as u32 => t.hold = d,
            k if k == MutexStatKind::CondWait as u32 => t.cond_wait = d,
            k if k == MutexStatKind::FailedWait as u32 => t.failed_wait = d,
            _ => {}
        }
    }
    let counts: BpfHashMap<&MapData, MutexKey, MutexCounts> = BpfHashMap::try_from(
        ebpf.map(map::MUTEX_COUNTS)
            .context("MUTEX_COUNTS map missing")?,
    )?;
    for entry in counts.iter() {
        let Ok((key, c)) = entry else { continue };
        snap.locks
            .entry(key.addr)
            .or_default()
            .entry(key.tid)
            .or_default()
            .counts = c;
    }
    let sites: BpfHashMap<&MapData, MutexSiteKey, MutexSite> = BpfHashMap::try_from(
        ebpf.map(map::MUTEX_SITES)
            .context("MUTEX_SITES map missing")?,
    )?;
    snap.sites = sites
        .iter()
        .filter_map(Result::ok)
        .map(|(k, s)| Site {
            addr: k.addr,
            caller: k.caller,
            stack_id: s.stack_id,
            numbers: s,
        })
        .collect();
    let errors: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
        ebpf.map(map::MUTEX_ERRORS)
            .context("MUTEX_ERRORS map missing")?,
    )?;
    for idx in [MUTEX_ERR_STATS_FULL, MUTEX_ERR_STATE_FULL] {
        if let Ok(per_cpu) = errors.get(&idx, 0) {
            snap.lost_events += per_cpu.iter().sum::<u64>();
        }
    }
    if let Ok(per_cpu) = errors.get(&MUTEX_ERR_STACK_LOST, 0) {
        snap.call_site_stacks_lost = per_cpu.iter().sum::<u64>();
    }
    snap.kernel_memory_bytes = crate::probe::attach::kernel_memory_bytes();
    Ok(snap)
}

/// The instruction pointers of a recorded user stack, innermost first.
pub fn stack(ebpf: &Ebpf, stack_id: i64) -> Vec<u64> {
    let Ok(stack_id) = u32::try_from(stack_id) else {
        return Vec::new();
    };
    let Some(map) = ebpf.map(map::MUTEX_STACKS) else {
        return Vec::new();
    };
    let Ok(stacks) = StackTraceMap::<&MapData>::try_from(map) else {
        return Vec::new();
    };
    stacks
        .get(&stack_id, 0)
        .map(|s| s.frames().iter().map(|f| f.ip).collect())
        .unwrap_or_default()
}
