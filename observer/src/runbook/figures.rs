//! The numbers a runbook compares, for a whole process or one thread group, from a saved report.
use std::collections::BTreeMap;

use observer_common::bucket_index;
use serde::Serialize;

use super::saved::{SavedReport, SavedThread};
use crate::{histogram::Distribution, report::format::round2, thread_group::group_of};

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Figures {
    /// Threads in the group (1 for a plain thread, the pool's size for a pool).
    pub threads: usize,
    /// Summed holds over the observed time, %.
    pub held_pct: f64,
    /// Summed waits over the observed time, % (may exceed 100).
    pub wait_pct: f64,
    /// Percentiles of single waits, ns (from the histograms: within 1/8 of a power of two).
    pub p50_wait_ns: u64,
    pub p99_wait_ns: u64,
    pub max_wait_ns: u64,
    pub acquisitions_per_sec: f64,
}

impl Figures {
    pub fn of<'a>(threads: impl IntoIterator<Item = &'a SavedThread>, observed_ns: u64) -> Figures {
        let mut waits = Distribution::default();
        let (mut n, mut held, mut waited, mut acq, mut max) = (0, 0u64, 0u64, 0u64, 0u64);
        for t in threads {
            n += 1;
            held += t.hold_ns.total;
            waited += t.wait_ns.total;
            acq += t.acquisitions;
            max = max.max(t.wait_ns.max);
            for &(upper, count) in &t.wait_hist {
                waits.buckets[bucket_index(upper.saturating_sub(1))] += count;
            }
        }
        waits.max_ns = max;
        let base = observed_ns.max(1) as f64;
        Figures {
            threads: n,
            held_pct: round2(held as f64 * 100.0 / base),
            wait_pct: round2(waited as f64 * 100.0 / base),
            p50_wait_ns: waits.quantile(0.50),
            p99_wait_ns: waits.quantile(0.99),
            max_wait_ns: max,
            acquisitions_per_sec: round2(acq as f64 * 1e9 / base),
        }
    }

    /// The whole process.
    pub fn process(r: &SavedReport) -> Figures {
        Self::of(&r.threads, r.observed_ns())
    }

    /// Per thread group (pools collapsed), by group name.
    pub fn groups(r: &SavedReport) -> BTreeMap<String, Figures> {
        let mut by_group: BTreeMap<String, Vec<&SavedThread>> = BTreeMap::new();
        for t in &r.threads {
            by_group.entry(group_of(&t.name)).or_default().push(t);
        }
        by_group
            .into_iter()
            .map(|(g, ts)| (g, Self::of(ts, r.observed_ns())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"kind":"final","pid":7,"duration_ns":2000000000,
      "sampling":{"observed_ns":1000000000},
      "threads":[
        {"name":"io-1","acquisitions":100,"wait_ns":{"total":500000000,"max":9000000},"hold_ns":{"total":1000000},
         "wait_hist":[[1,10],[5242880,89],[9437184,1]]},
        {"name":"io-2","acquisitions":100,"wait_ns":{"total":300000000,"max":6000000},"hold_ns":{"total":1000000},
         "wait_hist":[[1,10],[5242880,90]]},
        {"name":"cpu-hog","acquisitions":200,"wait_ns":{"total":1000000,"max":10000},"hold_ns":{"total":900000000},
         "wait_hist":[[1,199],[10240,1]]}]}"#;

    #[test]
    fn shares_are_over_the_observed_time_and_pools_merge() {
        let r = SavedReport::parse(&REPORT.replace('\n', ""), "t").unwrap();
        let p = Figures::process(&r);
        assert_eq!(p.threads, 3);
        assert_eq!(p.held_pct, 90.2);
        assert_eq!(p.wait_pct, 80.1);
        assert_eq!(p.acquisitions_per_sec, 400.0);
        let g = Figures::groups(&r);
        assert_eq!(g.len(), 2);
        let io = g["io-*"];
        assert_eq!(io.threads, 2);
        assert_eq!(io.wait_pct, 80.0);
        assert_eq!(io.max_wait_ns, 9_000_000);
        // 200 waits: 20 of 0 ns, 179 in [4.5, 5.2) ms, 1 in [8.4, 9.4) ms.
        assert!(
            (4_718_592..5_242_880).contains(&io.p99_wait_ns),
            "{}",
            io.p99_wait_ns
        );
        assert!(io.p50_wait_ns >= 4_718_592);
        assert!(g["cpu-hog"].p99_wait_ns < 2, "{}", g["cpu-hog"].p99_wait_ns);
    }
}
