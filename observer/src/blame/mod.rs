//! Blame, userspace side: tell the kernel how to walk this interpreter's frames (`arm`), turn
//! the stacks it recorded into Python source locations while the target is alive (`refresh`),
//! and aggregate hold and wait time by stack across threads for the report (`report`).
//!
//! The kernel side (observer-ebpf/src/blame.rs) samples on a waiter's timed-wait timeout, so
//! blame needs the two-trap `pthread_cond_timedwait` probes (the `symtab` and `exports`
//! strategies on 3.8+) and the GIL's address (`gil->last_holder`).
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use observer_common::{
    BLAME_NO_OFFSET, BLAME_WALK_NS, BLAME_WALKS, BlameConfig, BlameKey, BlameStack, BlameStat,
    names::map,
};

use crate::{
    gil::{address::GilAddress, locate::Interpreter, plan::ProbePlan},
    probe::attach::Attached,
    python::{
        code::Symbolizer,
        frames::{FrameWalk, frame_walk},
        memory::ProcessMemory,
    },
    report::blame::{BlameReport, BlamedFrame, BlamedStack, BlamedThread},
};

/// What the user asked for.
#[derive(Clone, Copy, Debug)]
pub struct BlameOptions {
    pub enabled: bool,
    /// Stacks whose longest hold (or wait) is shorter are not listed.
    pub min: Option<Duration>,
}

/// Distinct stacks symbolized per refresh: bounds the reads one poll makes in the target.
const SYMBOLIZE_PER_REFRESH: usize = 256;
/// Stacks listed per table.
const TOP: usize = 10;

pub struct Blame {
    options: BlameOptions,
    /// Why blame cannot run here, when it cannot.
    unavailable: Option<String>,
    walk: Option<FrameWalk>,
    version: (u8, u8),
    runtime: Option<u64>,
    pid: u32,
    /// The GIL's switch interval, once the GIL was found: the default threshold.
    interval_ns: Option<u64>,
    armed: bool,
    /// Every (tid, tstate) pairing seen: hold blame is keyed by the holder's tstate.
    tstate_tids: HashMap<u64, u32>,
    /// Stack id → its frames, symbolized, and whether it was truncated.
    stacks: HashMap<u64, (Vec<BlamedFrame>, bool)>,
    /// The kernel's walk count at the last refresh: no walk since, no new stack to read.
    walks_seen: u64,
}

impl Blame {
    /// Decides whether blame can run with this plan, before anything is attached.
    pub fn new(
        options: BlameOptions,
        plan: &ProbePlan,
        interpreter: &Interpreter,
        pid: u32,
    ) -> Self {
        let version = interpreter.version.minor_version();
        let unavailable = if !options.enabled {
            Some("turned off (--no-blame)".to_owned())
        } else if version.1 < 8 {
            Some(format!(
                "not available on Python 3.{}: its GIL cannot be located in memory",
                version.1
            ))
        } else if !plan.wants_gil_address() {
            Some(format!(
                "not available with the {} strategy: it has no probe on the GIL's timed wait, \
                 whose timeout is when blame samples the holder (use --strategy symtab or exports)",
                serde_json::to_value(plan.strategy)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ))
        } else {
            None
        };
        Blame {
            options,
            unavailable,
            walk: None,
            version,
            runtime: None,
            pid,
            interval_ns: None,
            armed: false,
            tstate_tids: HashMap::new(),
            stacks: HashMap::new(),
            walks_seen: 0,
        }
    }

    pub fn is_wanted(&self) -> bool {
        self.unavailable.is_none()
    }

    /// Writes the frame-walk offsets into the kernel once the GIL's address is known (it is
    /// what the kernel reads `last_holder` from).
    pub fn arm(&mut self, attached: &mut Attached, interpreter: &Interpreter, gil: &GilAddress) {
        if self.unavailable.is_some() || self.armed {
            return;
        }
        self.runtime = interpreter.runtime_address_of("_PyRuntime");
        let memory = ProcessMemory::new(self.pid);
        let walk = match frame_walk(&memory, self.version.1, self.runtime) {
            Ok(w) => w,
            Err(e) => {
                self.unavailable = Some(format!("frames cannot be walked: {e:#}"));
                return;
            }
        };
        self.interval_ns = read_interval(&memory, gil);
        let l = gil.layout;
        let config = BlameConfig {
            enabled: 1,
            // last_holder is the word before `locked` in every GIL build.
            cond_to_holder: l.cond - (l.locked - 8),
            tstate_frame: walk.tstate_frame,
            cframe_frame: walk.cframe_frame.unwrap_or(BLAME_NO_OFFSET),
            frame_back: walk.frame_back,
            frame_code: walk.frame_code,
            frame_pos: walk.frame_pos,
            pos_is_ptr: u64::from(walk.position == crate::python::frames::PositionKind::InstrPtr),
            frame_owner: walk.frame_owner.unwrap_or(BLAME_NO_OFFSET),
            skip_owner_from: walk.skip_owner_from.map_or(u64::MAX, u64::from),
            code_tag_mask: walk.code_tag_mask,
        };
        match write_config(attached, &config) {
            Ok(()) => {
                self.walk = Some(walk);
                self.armed = true;
            }
            Err(e) => self.unavailable = Some(format!("{e:#}")),
        }
    }

    /// Remembers which thread a thread state belongs to (holds are keyed by tstate).
    pub fn note_threads(&mut self, tstates: &HashMap<u32, u64>) {
        for (&tid, &tstate) in tstates {
            if tstate != 0 {
                self.tstate_tids.insert(tstate, tid);
            }
        }
    }

    /// Symbolizes the stacks recorded since the last call, while their code objects are alive.
    pub fn refresh(&mut self, attached: &Attached) {
        if !self.armed {
            return;
        }
        // Polled every 100 ms: one counter read when nothing was sampled since.
        let (walks, _) = walk_cost(&attached.ebpf);
        if walks == self.walks_seen {
            return;
        }
        let Ok(new) = read_new_stacks(attached, &self.stacks) else {
            return;
        };
        if new.len() < SYMBOLIZE_PER_REFRESH {
            self.walks_seen = walks;
        }
        if new.is_empty() {
            return;
        }
        let memory = ProcessMemory::new(self.pid);
        let Ok(mut symbolizer) = Symbolizer::new(&memory, self.version, self.runtime) else {
            return;
        };
        let Some(walk) = self.walk else { return };
        for (id, stack) in new {
            let depth = (stack.depth as usize).min(stack.frames.len());
            let frames = stack.frames[..depth]
                .iter()
                .map(|f| {
                    let at = symbolizer.locate(f.code, walk.position.position(f.pos));
                    BlamedFrame::located(at.ok(), f.code)
                })
                .collect();
            self.stacks.insert(id, (frames, stack.truncated != 0));
        }
    }

    /// The blame section of the final report (`hold_total_ns`, `wait_total_ns`: every
    /// thread's, for the shares).
    pub fn report(
        &mut self,
        attached: &Attached,
        names: &dyn Fn(u32) -> String,
        hold_total_ns: u64,
        wait_total_ns: u64,
    ) -> BlameReport {
        let min_ns = self
            .options
            .min
            .map(|d| d.as_nanos() as u64)
            .or(self.interval_ns)
            .unwrap_or(5_000_000);
        let mut report = BlameReport {
            available: self.unavailable.is_none() && self.armed,
            unavailable: self
                .unavailable
                .clone()
                .or_else(|| (!self.armed).then(|| "the GIL's address was not found".to_owned())),
            min_ns,
            native_frames: "not collected: the holder's native stack cannot be read from \
                            another thread's probe"
                .to_owned(),
            hold_total_ns,
            hold_blamed_ns: 0,
            wait_total_ns,
            wait_blamed_ns: 0,
            samples: 0,
            lost: 0,
            holds: Vec::new(),
            waits: Vec::new(),
        };
        if !report.available {
            return report;
        }
        self.refresh(attached);
        report.lost = read_errors(attached).unwrap_or(0);
        let tstate_tids = self.tstate_tids.clone();
        let holds = read_stats(attached, map::BLAME_HOLDS).unwrap_or_default();
        report.samples = holds.iter().map(|(_, s)| s.samples).sum();
        report.hold_blamed_ns = holds.iter().map(|(_, s)| s.total_ns).sum();
        report.holds = self.rank(
            holds
                .into_iter()
                .map(|(k, s)| (tstate_tids.get(&k.who).copied().unwrap_or(0), k.stack, s)),
            names,
            hold_total_ns,
            min_ns,
        );
        let waits = read_stats(attached, map::BLAME_WAITS).unwrap_or_default();
        report.wait_blamed_ns = waits.iter().map(|(_, s)| s.total_ns).sum();
        report.waits = self.rank(
            waits.into_iter().map(|(k, s)| (k.who as u32, k.stack, s)),
            names,
            wait_total_ns,
            min_ns,
        );
        report
    }

    /// Merges entries whose stacks read the same in source terms (the kernel keys by raw
    /// instruction positions: two instructions of one line are two stacks there), ranks them by
    /// total, keeps the top ones at or over the threshold.
    fn rank(
        &self,
        entries: impl Iterator<Item = (u32, u64, BlameStat)>,
        names: &dyn Fn(u32) -> String,
        all_ns: u64,
        min_ns: u64,
    ) -> Vec<BlamedStack> {
        let mut merged: BTreeMap<Vec<BlamedFrame>, (BlamedStack, BTreeMap<u32, u64>)> =
            BTreeMap::new();
        for (tid, stack, s) in entries {
            let (frames, truncated) = match self.stacks.get(&stack) {
                Some((f, t)) => (f.clone(), *t),
                None => (Vec::new(), true),
            };
            let e = merged.entry(frames.clone()).or_insert_with(|| {
                (
                    BlamedStack {
                        frames,
                        truncated,
                        count: 0,
                        total_ns: 0,
                        max_ns: 0,
                        samples: 0,
                        share_pct: 0.0,
                        caused_wait_ns: 0,
                        threads: Vec::new(),
                        headline: None,
                    },
                    BTreeMap::new(),
                )
            });
            e.0.count += s.count;
            e.0.total_ns += s.total_ns;
            e.0.max_ns = e.0.max_ns.max(s.max_ns);
            e.0.samples += s.samples;
            e.0.caused_wait_ns += s.caused_wait_ns;
            *e.1.entry(tid).or_default() += s.total_ns;
        }
        let mut out: Vec<BlamedStack> = merged
            .into_values()
            .map(|(mut b, threads)| {
                b.share_pct =
                    crate::report::format::round2(b.total_ns as f64 * 100.0 / all_ns.max(1) as f64);
                let mut threads: Vec<(u32, u64)> = threads.into_iter().collect();
                threads.sort_by_key(|t| std::cmp::Reverse(t.1));
                b.threads = threads
                    .into_iter()
                    .map(|(tid, ns)| BlamedThread {
                        tid,
                        name: if tid == 0 { "?".to_owned() } else { names(tid) },
                        total_ns: ns,
                    })
                    .collect();
                b.headline = b.find_headline().cloned();
                b
            })
            .filter(|b| b.max_ns >= min_ns)
            .collect();
        out.sort_by_key(|b| std::cmp::Reverse(b.total_ns));
        out.truncate(TOP);
        out
    }
}

/// The GIL's switch interval (µs in the struct's first word; `enabled` comes first in
/// free-threaded builds), as ns.
fn read_interval(memory: &ProcessMemory, gil: &GilAddress) -> Option<u64> {
    use crate::python::memory::RemoteMemory as _;
    let us = memory
        .read_u64(gil.addr + gil.layout.interval)
        .ok()
        .map(|v| v as u32 as u64)?;
    (1..=10_000_000).contains(&us).then_some(us * 1000)
}

fn write_config(attached: &mut Attached, config: &BlameConfig) -> anyhow::Result<()> {
    let m = attached
        .ebpf
        .map_mut(map::BLAME_CONFIG)
        .context("BLAME_CONFIG map missing")?;
    let mut a: Array<&mut MapData, BlameConfig> = Array::try_from(m)?;
    a.set(0, config, 0)
        .context("writing the frame-walk offsets to the kernel")
}

/// The stacks not symbolized yet (keys first: a known stack's 520 bytes are not copied again).
fn read_new_stacks(
    attached: &Attached,
    known: &HashMap<u64, (Vec<BlamedFrame>, bool)>,
) -> anyhow::Result<Vec<(u64, BlameStack)>> {
    let m: BpfHashMap<&MapData, u64, BlameStack> = BpfHashMap::try_from(
        attached
            .ebpf
            .map(map::BLAME_STACKS)
            .context("BLAME_STACKS map missing")?,
    )?;
    Ok(m.keys()
        .filter_map(Result::ok)
        .filter(|id| !known.contains_key(id))
        .take(SYMBOLIZE_PER_REFRESH)
        .filter_map(|id| Some((id, m.get(&id, 0).ok()?)))
        .collect())
}

fn read_stats(attached: &Attached, name: &str) -> anyhow::Result<Vec<(BlameKey, BlameStat)>> {
    let m: BpfHashMap<&MapData, BlameKey, BlameStat> = BpfHashMap::try_from(
        attached
            .ebpf
            .map(name)
            .with_context(|| format!("{name} map missing"))?,
    )?;
    Ok(m.iter().filter_map(Result::ok).collect())
}

/// (frame walks, kernel ns they took) so far: what blame costs the target, for the budget.
pub fn walk_cost(ebpf: &aya::Ebpf) -> (u64, u64) {
    let Some(m) = ebpf.map(map::BLAME_ERRORS) else {
        return (0, 0);
    };
    let Ok(counters) = PerCpuArray::<&MapData, u64>::try_from(m) else {
        return (0, 0);
    };
    let sum = |idx: u32| -> u64 {
        counters
            .get(&idx, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    };
    (sum(BLAME_WALKS), sum(BLAME_WALK_NS))
}

fn read_errors(attached: &Attached) -> anyhow::Result<u64> {
    let errors: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
        attached
            .ebpf
            .map(map::BLAME_ERRORS)
            .context("BLAME_ERRORS map missing")?,
    )?;
    let mut n = 0;
    for idx in 0..BLAME_WALKS {
        if let Ok(per_cpu) = errors.get(&idx, 0) {
            n += per_cpu.iter().sum::<u64>();
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blame_with(stacks: &[(u64, &[(&str, u32)])]) -> Blame {
        Blame {
            options: BlameOptions {
                enabled: true,
                min: None,
            },
            unavailable: None,
            walk: None,
            version: (3, 12),
            runtime: None,
            pid: 1,
            interval_ns: Some(5_000_000),
            armed: true,
            tstate_tids: HashMap::new(),
            stacks: stacks
                .iter()
                .map(|(id, frames)| {
                    let frames = frames
                        .iter()
                        .map(|(q, line)| BlamedFrame {
                            qualname: (*q).to_owned(),
                            filename: "app.py".to_owned(),
                            line: Some(*line),
                            first_line: Some(1),
                        })
                        .collect();
                    (*id, (frames, false))
                })
                .collect(),
            walks_seen: 0,
        }
    }

    fn stat(total_ms: u64, count: u64, max_ms: u64) -> BlameStat {
        BlameStat {
            total_ns: total_ms * 1_000_000,
            samples: count * 6,
            count,
            max_ns: max_ms * 1_000_000,
            caused_wait_ns: 0,
        }
    }

    #[test]
    fn stacks_that_read_the_same_merge_across_threads_and_rank_by_total() {
        // Stacks 1 and 2 differ only in raw instruction positions: one source line.
        let b = blame_with(&[
            (1, &[("dumps", 231), ("serialize", 61)]),
            (2, &[("dumps", 231), ("serialize", 61)]),
            (3, &[("loop", 12)]),
            (4, &[("tiny", 3)]),
        ]);
        let entries = vec![
            (10, 1, stat(300, 10, 31)),
            (11, 2, stat(100, 3, 35)),
            (12, 3, stat(350, 50, 7)),
            (12, 4, stat(50, 20, 4)),
            // A stack the kernel kept but userspace never named.
            (13, 99, stat(40, 1, 40)),
        ];
        let names = |tid: u32| format!("t{tid}");
        let ranked = b.rank(entries.into_iter(), &names, 1_000_000_000, 5_000_000);
        let totals: Vec<u64> = ranked.iter().map(|s| s.total_ns / 1_000_000).collect();
        // 400 (merged), 350, 40 (unnamed); `tiny` is under the 5 ms threshold.
        assert_eq!(totals, vec![400, 350, 40]);
        let top = &ranked[0];
        assert_eq!((top.count, top.max_ns), (13, 35_000_000));
        assert_eq!(top.share_pct, 40.0);
        let threads: Vec<(u32, &str)> = top
            .threads
            .iter()
            .map(|t| (t.tid, t.name.as_str()))
            .collect();
        assert_eq!(threads, vec![(10, "t10"), (11, "t11")]);
        assert!(ranked[2].frames.is_empty() && ranked[2].truncated);
    }
}
