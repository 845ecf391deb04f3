//! Step 5: read what the kernel aggregated.
use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use observer_common::{
    ERR_STATS_MAP_FULL, ERR_THREADS_MAP_FULL, Histogram, StatKey, StatKind, ThreadGilState,
    names::map,
};

use crate::{
    histogram::Distribution,
    probe::{attach::Attached, cost::Hits},
};

/// One thread's cumulative numbers at a moment.
#[derive(Clone, Default)]
pub struct ThreadSample {
    pub wait: Distribution,
    pub hold: Distribution,
}

/// Everything the kernel had at one moment (cumulative since attach).
#[derive(Clone, Default)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC, the kernel's bpf_ktime_get_ns clock.
    pub at_ns: u64,
    pub threads: BTreeMap<u32, ThreadSample>,
    /// tid → PyThreadState* seen by take_gil.
    pub tstates: HashMap<u32, u64>,
    /// Events dropped because a kernel map was full.
    pub lost_events: u64,
    /// Probe traps taken since attach, by kind.
    pub hits: Hits,
    /// Time the probes were attached since attach (less than the wall time when duty cycling).
    pub probed_ns: u64,
    /// Whether duty cycling has had the probes off at some point up to now.
    pub sampled: bool,
    /// Kernel memory of gilwatch's BPF maps now.
    pub kernel_memory_bytes: u64,
    /// Why the GIL changed hands, GIL held off-CPU.
    pub handoffs: crate::handoff::HandoffSample,
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Current per-thread state only (cheap: no histograms), for discovering threads and tstates.
pub fn thread_states(attached: &Attached) -> anyhow::Result<HashMap<u32, ThreadGilState>> {
    let map: BpfHashMap<&MapData, u32, ThreadGilState> = BpfHashMap::try_from(
        attached
            .ebpf
            .map(map::THREADS)
            .context("THREADS map missing")?,
    )?;
    Ok(map.iter().filter_map(Result::ok).collect())
}

/// A thread's spans still under way at `now`: (wait, hold).
///
/// Three states are possible: waiting (take started, no hold), holding (hold started, the take
/// already recorded or never seen), and — two-trap design only — holding after a wait that is
/// recorded only when the hold ends (take and hold both set): that wait is over, its length known.
pub fn open_spans(st: &ThreadGilState, now: u64) -> (Option<u64>, Option<u64>) {
    let (take, hold) = (st.take_start_ns, st.hold_start_ns);
    match (take != 0, hold != 0) {
        (true, false) => (Some(now.saturating_sub(take)), None),
        (false, true) => (None, Some(now.saturating_sub(hold))),
        (true, true) => (
            Some(hold.saturating_sub(take)),
            Some(now.saturating_sub(hold)),
        ),
        (false, false) => (None, None),
    }
}

/// `include_open`: count spans still open now (false once the target has exited: its last spans
/// ended at an unknown moment, and must not keep growing until we read them).
pub fn snapshot(attached: &Attached, include_open: bool) -> anyhow::Result<Snapshot> {
    let stats: BpfHashMap<&MapData, StatKey, Histogram> =
        BpfHashMap::try_from(attached.ebpf.map(map::STATS).context("STATS map missing")?)?;
    let mut snap = Snapshot::default();
    for entry in stats.iter() {
        // An entry can vanish between listing keys and reading it; skip it this round.
        let Ok((key, hist)) = entry else { continue };
        let t = snap.threads.entry(key.tid).or_default();
        if key.kind == StatKind::Wait as u32 {
            t.wait = Distribution::from(&hist);
        } else if key.kind == StatKind::Hold as u32 {
            t.hold = Distribution::from(&hist);
        }
    }
    // Right after the histograms: acquisitions between the two reads would be in one and not
    // the other.
    snap.handoffs = crate::handoff::read(&attached.ebpf)?;
    // Spans still open now (a thread holding the GIL, or waiting for it) count toward totals, so
    // a thread that holds the GIL for the whole run does not read as idle.
    // One instant for the whole snapshot, taken after the histograms were read: a span that
    // ends during the read is then missed (counted neither closed nor open) rather than counted
    // twice, and open spans never reach past the snapshot's own time.
    let now = monotonic_ns();
    snap.at_ns = now;
    for (tid, st) in thread_states(attached)? {
        if st.tstate != 0 {
            snap.tstates.insert(tid, st.tstate);
        }
        let (open_wait, open_hold) = open_spans(&st, now);
        if include_open && (open_hold.is_some() || open_wait.is_some()) {
            let t = snap.threads.entry(tid).or_default();
            if let Some(ns) = open_hold {
                t.hold.add_open_span(ns);
            }
            if let Some(ns) = open_wait {
                t.wait.add_open_span(ns);
            }
        }
    }
    let errors: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
        attached
            .ebpf
            .map(map::ERRORS)
            .context("ERRORS map missing")?,
    )?;
    for idx in [ERR_STATS_MAP_FULL, ERR_THREADS_MAP_FULL] {
        if let Ok(per_cpu) = errors.get(&idx, 0) {
            snap.lost_events += per_cpu.iter().sum::<u64>();
        }
    }
    snap.hits = attached.hits()?;
    snap.kernel_memory_bytes = crate::probe::attach::kernel_memory_bytes();
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(take: u64, hold: u64) -> ThreadGilState {
        ThreadGilState {
            take_start_ns: take,
            hold_start_ns: hold,
            tstate: 0,
        }
    }

    #[test]
    fn open_spans_cover_every_state() {
        assert_eq!(open_spans(&st(0, 0), 100), (None, None));
        assert_eq!(open_spans(&st(40, 0), 100), (Some(60), None));
        assert_eq!(open_spans(&st(0, 70), 100), (None, Some(30)));
        // Two-trap design: waited 40→70 (recorded at drop_gil), holding since 70.
        assert_eq!(open_spans(&st(40, 70), 100), (Some(30), Some(30)));
    }
}
