//! Cumulative totals per thread group, fed from the kernel's per-thread numbers, encoded for
//! Prometheus. Counters never go down: a thread's numbers are folded in as they grow, kept when
//! it exits (after which its kernel entries can be freed), and spans still open count as far as
//! they have got. Memory is bounded: one small entry per live thread, at most MAX_GROUPS label
//! sets (later groups share `~other`).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use observer_common::{HIST_BUCKETS, bucket_upper};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use crate::{collect::Snapshot, histogram::Distribution, thread_group::group_of};

/// Histogram bounds: powers of two from 1.024 µs to 8.6 s. Each is also a boundary of the
/// kernel's log-linear buckets, so every kernel bucket falls wholly under one of them: the
/// exported counts are exact, not interpolated.
const FIRST_POW: u32 = 10;
const BOUNDS: usize = 24;
/// Label sets beyond this many groups share one (`~other`): a process that names threads after
/// requests must not grow the exporter (or the Prometheus server) without bound.
pub const MAX_GROUPS: usize = 256;
pub const OTHER: &str = "~other";

fn bound_ns(i: usize) -> u64 {
    1u64 << (FIRST_POW as usize + i)
}

/// The exported slot of each kernel bucket (BOUNDS = +Inf).
fn slot_of_kernel_bucket(i: usize) -> usize {
    let upper = bucket_upper(i);
    (0..BOUNDS)
        .find(|&j| bound_ns(j) >= upper)
        .unwrap_or(BOUNDS)
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Hist {
    count: u64,
    sum_ns: u64,
    /// Per slot (not cumulative); the last is +Inf.
    slots: [u64; BOUNDS + 1],
}

impl Hist {
    fn of(d: &Distribution, slot: &[usize; HIST_BUCKETS]) -> Hist {
        let mut h = Hist {
            count: d.count,
            sum_ns: d.total_ns,
            slots: [0; BOUNDS + 1],
        };
        for (i, &c) in d.buckets.iter().enumerate() {
            h.slots[slot[i]] += c;
        }
        h
    }

    /// Adds what `now` has beyond `seen` (kernel histograms only grow).
    fn add_growth(&mut self, now: &Hist, seen: &Hist) {
        self.count += now.count.saturating_sub(seen.count);
        self.sum_ns += now.sum_ns.saturating_sub(seen.sum_ns);
        for (i, s) in self.slots.iter_mut().enumerate() {
            *s += now.slots[i].saturating_sub(seen.slots[i]);
        }
    }
}

/// One label set's totals.
#[derive(Debug, Clone, Default)]
struct Group {
    hold_ns: u64,
    wait_ns: u64,
    acquisitions: u64,
    wait: Hist,
    hold: Hist,
}

/// What has been folded in of one live thread.
#[derive(Debug, Default)]
struct Seen {
    wait: Hist,
    hold: Hist,
    /// Closed plus open time as last counted (never lowered).
    hold_ns: u64,
    wait_ns: u64,
}

/// A thread's reading: the kernel's histograms (closed spans) and its spans open now.
pub struct Reading<'a> {
    pub tid: u32,
    pub name: String,
    pub wait: &'a Distribution,
    pub hold: &'a Distribution,
    pub open_wait_ns: u64,
    pub open_hold_ns: u64,
}

#[derive(Debug)]
pub struct Totals {
    pid: String,
    slot: Box<[usize; HIST_BUCKETS]>,
    groups: BTreeMap<String, Group>,
    seen: HashMap<u32, Seen>,
    probed_ns: u64,
    lost_events: u64,
}

impl Totals {
    pub fn new(pid: u32) -> Totals {
        let mut slot = Box::new([0; HIST_BUCKETS]);
        for (i, s) in slot.iter_mut().enumerate() {
            *s = slot_of_kernel_bucket(i);
        }
        Totals {
            pid: pid.to_string(),
            slot,
            groups: BTreeMap::new(),
            seen: HashMap::new(),
            probed_ns: 0,
            lost_events: 0,
        }
    }

    fn group(&mut self, name: &str) -> &mut Group {
        let g = group_of(name);
        let key = if self.groups.contains_key(&g) || self.groups.len() < MAX_GROUPS {
            g
        } else {
            OTHER.to_owned()
        };
        self.groups.entry(key).or_default()
    }

    /// Folds in one reading of every thread the kernel has numbers for. `exited`: threads that
    /// had exited before the reading was taken; their numbers are final, so they are folded and
    /// forgotten (their kernel entries can go).
    pub fn update<'a>(
        &mut self,
        readings: impl IntoIterator<Item = Reading<'a>>,
        exited: &HashSet<u32>,
        probed_ns: u64,
        lost_events: u64,
    ) {
        let mut present = HashSet::new();
        for r in readings {
            present.insert(r.tid);
            let wait = Hist::of(r.wait, &self.slot);
            let hold = Hist::of(r.hold, &self.slot);
            let mut seen = self.seen.remove(&r.tid).unwrap_or_default();
            let wait_ns = (r.wait.total_ns + r.open_wait_ns).max(seen.wait_ns);
            let hold_ns = (r.hold.total_ns + r.open_hold_ns).max(seen.hold_ns);
            let g = self.group(&r.name);
            g.wait_ns += wait_ns - seen.wait_ns;
            g.hold_ns += hold_ns - seen.hold_ns;
            g.acquisitions += wait.count.saturating_sub(seen.wait.count);
            g.wait.add_growth(&wait, &seen.wait);
            g.hold.add_growth(&hold, &seen.hold);
            seen = Seen {
                wait,
                hold,
                hold_ns,
                wait_ns,
            };
            if !exited.contains(&r.tid) {
                self.seen.insert(r.tid, seen);
            }
        }
        // Threads whose kernel entries are gone: nothing more will come from them.
        self.seen.retain(|tid, _| present.contains(tid));
        self.probed_ns = self.probed_ns.max(probed_ns);
        self.lost_events = self.lost_events.max(lost_events);
    }

    #[cfg(test)]
    pub fn live_threads(&self) -> usize {
        self.seen.len()
    }

    #[cfg(test)]
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let secs = |ns: u64| ns as f64 / 1e9;
        type Pick = fn(&Group) -> u64;
        let counters: [(&str, &str, Option<Unit>, Pick); 3] = [
            (
                "gil_hold",
                "Time threads held the GIL (spans under way included as far as they have got).",
                Some(Unit::Seconds),
                |g| g.hold_ns,
            ),
            (
                "gil_wait",
                "Time threads waited for the GIL, summed over threads (spans under way included).",
                Some(Unit::Seconds),
                |g| g.wait_ns,
            ),
            (
                "gil_acquisitions",
                "Times threads took the GIL.",
                None,
                |g| g.acquisitions,
            ),
        ];
        for (name, help, unit, pick) in counters {
            let mut m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
            for (thread, g) in &self.groups {
                let labels = [("pid", self.pid.as_str()), ("thread", thread.as_str())];
                let v = pick(g);
                let fam = m.encode_family(&labels)?;
                if unit.is_some() {
                    ConstCounter::new(secs(v)).encode(fam)?;
                } else {
                    ConstCounter::new(v).encode(fam)?;
                }
            }
        }
        type PickHist = fn(&Group) -> &Hist;
        let hists: [(&str, &str, PickHist); 2] = [
            (
                "gil_wait_duration",
                "Single waits for the GIL (completed ones).",
                |g| &g.wait,
            ),
            (
                "gil_hold_duration",
                "Single holds of the GIL (completed ones).",
                |g| &g.hold,
            ),
        ];
        for (name, help, pick) in hists {
            let mut m =
                enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
            for (thread, g) in &self.groups {
                let labels = [("pid", self.pid.as_str()), ("thread", thread.as_str())];
                let h = pick(g);
                let buckets: Vec<(f64, u64)> = h
                    .slots
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let le = if i < BOUNDS {
                            secs(bound_ns(i))
                        } else {
                            f64::INFINITY
                        };
                        (le, c)
                    })
                    .collect();
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    secs(h.sum_ns),
                    h.count,
                    &buckets,
                    None,
                )?;
            }
        }
        let pid = [("pid", self.pid.as_str())];
        let mut m = enc.encode_descriptor(
            "probed",
            "Time the probes were attached (less than the wall time when --max-overhead had them off part of the time).",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(secs(self.probed_ns)).encode(m.encode_family(&pid)?)?;
        let mut m = enc.encode_descriptor(
            "lost_events",
            "Probe events the kernel could not record (a map was full); 0 means complete.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.lost_events).encode(m.encode_family(&pid)?)?;
        let mut m = enc.encode_descriptor(
            "tracked_threads",
            "Threads whose numbers are tracked one by one now; exited ones are folded into the totals and freed.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.seen.len() as i64).encode(m.encode_family(&pid)?)?;
        Ok(())
    }
}

/// The totals as the scrape handler and the session share them.
#[derive(Debug, Clone)]
pub struct Shared(pub Arc<Mutex<Totals>>);

impl Collector for Shared {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A poisoned lock still holds totals that only ever grew: serve them.
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.encode(enc)
    }
}

/// Readings from a snapshot taken without open spans, and the threads' open spans now.
pub fn readings<'a>(
    snap: &'a Snapshot,
    open: &'a HashMap<u32, (u64, u64)>,
    name: &'a dyn Fn(u32) -> String,
) -> impl Iterator<Item = Reading<'a>> + 'a {
    snap.threads.iter().map(move |(&tid, t)| {
        let (open_wait_ns, open_hold_ns) = open.get(&tid).copied().unwrap_or_default();
        Reading {
            tid,
            name: name(tid),
            wait: &t.wait,
            hold: &t.hold,
            open_wait_ns,
            open_hold_ns,
        }
    })
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn text(t: Totals) -> String {
        let mut reg = Registry::with_prefix("gilwatch");
        reg.register_collector(Box::new(Shared(Arc::new(Mutex::new(t)))));
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &reg).unwrap();
        s
    }

    fn reading<'a>(tid: u32, name: &str, w: &'a Distribution, h: &'a Distribution) -> Reading<'a> {
        Reading {
            tid,
            name: name.into(),
            wait: w,
            hold: h,
            open_wait_ns: 0,
            open_hold_ns: 0,
        }
    }

    #[test]
    fn every_kernel_bucket_lies_under_one_bound() {
        for i in 0..HIST_BUCKETS {
            let s = slot_of_kernel_bucket(i);
            if s < BOUNDS {
                assert!(bucket_upper(i) <= bound_ns(s));
                assert!(
                    s == 0 || observer_common::bucket_lower(i) >= bound_ns(s - 1),
                    "{i}"
                );
            }
        }
    }

    #[test]
    fn counters_keep_exited_threads_and_pools_share_a_label() {
        let mut t = Totals::new(42);
        let (w1, h1) = (
            Distribution::of_values(&[5_000_000, 6_000_000]),
            Distribution::of_values(&[1_000, 2_000]),
        );
        let (w2, h2) = (
            Distribution::of_values(&[4_000_000]),
            Distribution::of_values(&[3_000]),
        );
        t.update(
            [reading(1, "io-1", &w1, &h1), reading(2, "io-2", &w2, &h2)],
            &HashSet::new(),
            1_000_000_000,
            0,
        );
        assert_eq!(t.live_threads(), 2);
        // Thread 2 exited before the next reading: folded, then forgotten; its entries go.
        t.update(
            [reading(1, "io-1", &w1, &h1), reading(2, "io-2", &w2, &h2)],
            &HashSet::from([2]),
            2_000_000_000,
            0,
        );
        assert_eq!(t.live_threads(), 1);
        t.update(
            [reading(1, "io-1", &w1, &h1)],
            &HashSet::new(),
            3_000_000_000,
            0,
        );
        assert_eq!(t.groups(), 1);
        let s = text(t);
        assert!(
            s.contains("gilwatch_gil_wait_seconds_total{pid=\"42\",thread=\"io-*\"} 0.015\n"),
            "{s}"
        );
        assert!(
            s.contains("gilwatch_gil_acquisitions_total{pid=\"42\",thread=\"io-*\"} 3\n"),
            "{s}"
        );
        assert!(
            s.contains("gilwatch_gil_wait_duration_seconds_count{pid=\"42\",thread=\"io-*\"} 3\n"),
            "{s}"
        );
        // 4 ms and 5 ms lie under 2^23 ns (8.4 ms), 6 ms too; none under 2^22 (4.19 ms) but the 4 ms one.
        assert!(s.contains("gilwatch_gil_wait_duration_seconds_bucket{le=\"0.004194304\",pid=\"42\",thread=\"io-*\"} 1\n"), "{s}");
        assert!(s.contains("gilwatch_gil_wait_duration_seconds_bucket{le=\"0.008388608\",pid=\"42\",thread=\"io-*\"} 3\n"), "{s}");
        assert!(s.contains("gilwatch_gil_wait_duration_seconds_bucket{le=\"+Inf\",pid=\"42\",thread=\"io-*\"} 3\n"), "{s}");
        assert!(
            s.contains("gilwatch_probed_seconds_total{pid=\"42\"} 3.0\n"),
            "{s}"
        );
    }

    #[test]
    fn open_spans_count_and_counters_never_go_down() {
        let mut t = Totals::new(1);
        let (w, h) = (Distribution::default(), Distribution::default());
        let mut r = reading(7, "cpu", &w, &h);
        r.open_hold_ns = 2_000_000_000;
        t.update([r], &HashSet::new(), 0, 0);
        // The hold ended during the next read and was seen neither open nor closed.
        t.update([reading(7, "cpu", &w, &h)], &HashSet::new(), 0, 0);
        let closed = Distribution::of_values(&[2_500_000_000]);
        t.update([reading(7, "cpu", &w, &closed)], &HashSet::new(), 0, 0);
        let s = text(t);
        assert!(
            s.contains("gilwatch_gil_hold_seconds_total{pid=\"1\",thread=\"cpu\"} 2.5\n"),
            "{s}"
        );
    }

    #[test]
    fn label_sets_are_bounded() {
        let mut t = Totals::new(1);
        let (w, h) = (
            Distribution::of_values(&[10]),
            Distribution::of_values(&[10]),
        );
        for tid in 0..(MAX_GROUPS as u32 + 50) {
            let name = format!("request {tid}");
            t.update([reading(tid, &name, &w, &h)], &HashSet::from([tid]), 0, 0);
        }
        assert_eq!(t.groups(), MAX_GROUPS + 1);
        assert_eq!(t.live_threads(), 0);
        let s = text(t);
        assert!(
            s.contains("gilwatch_gil_acquisitions_total{pid=\"1\",thread=\"~other\"} 50\n"),
            "{s}"
        );
    }
}
