//! Why the GIL changed hands, and GIL held off-CPU: the report's `handoffs` section, as a model
//! (JSON) and as text.
use std::fmt::Write as _;

use serde::Serialize;

use super::{
    Names,
    bars::bars,
    format::{fmt_ns, truncate},
};
use crate::{
    handoff::HandoffSample,
    histogram::{Distribution, Summary},
};

/// What this run could see.
#[derive(Debug, Clone, Copy, Default)]
pub struct HandoffCaps {
    /// Forced drops can be told from voluntary ones: the timed wait on the GIL's condition is
    /// probed (symtab and exports strategies, 3.8+).
    pub forced_known: bool,
    /// `--offcpu`: the sched_switch tracker is attached.
    pub offcpu: bool,
}

/// Off-CPU spans of one kind: how many, how long in all.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spans {
    pub count: u64,
    pub total_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadHandoffReport {
    pub tid: u32,
    pub name: String,
    /// Drops while a waiter's request made during the hold was pending (null: not known here).
    pub forced_drops: Option<u64>,
    /// Drops nobody asked for: I/O, sleep, a C extension releasing the GIL (with
    /// `forced_known` false: every drop).
    pub voluntary_drops: u64,
    /// This thread's timed waits that expired and asked the holder to drop.
    pub drop_requests: u64,
    /// Forced drops this thread asked for whose GIL another thread took.
    pub requests_lost: u64,
    /// `--offcpu`: the thread held the GIL while switched out, sleeping in the kernel.
    pub offcpu_blocked: Spans,
    /// `--offcpu`: held the GIL while preempted (runnable, no CPU).
    pub offcpu_runnable: Spans,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    /// The thread whose drop came last before the acquisition; 0 when it was not seen (before
    /// attach, or while duty cycling had the probes out).
    pub from: u32,
    pub from_name: Option<String>,
    pub to: u32,
    pub to_name: String,
    pub count: u64,
    /// The taker's summed wait for these acquisitions.
    pub wait_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HandoffReport {
    pub forced_known: bool,
    pub offcpu: bool,
    /// Threads that dropped the GIL, asked for it, or held it off-CPU; most drops first.
    pub threads: Vec<ThreadHandoffReport>,
    /// Every (from, to) pair, most acquisitions first. Their counts add up to the acquisitions.
    pub pairs: Vec<PairReport>,
    /// Acquisitions not in `pairs` (the kernel's pair map was full).
    pub pairs_lost: u64,
    pub forced_drops: Option<u64>,
    /// From a forced drop to the next acquisition by any thread: the GIL is free, the thread
    /// that gets it is not yet running (the convoy effect).
    pub forced_latency_ns: Summary,
    pub forced_latency_hist: Vec<(u64, u64)>,
    /// `--offcpu`: off-CPU spans of the GIL's holder, all threads.
    pub offcpu_blocked_ns: Summary,
    pub offcpu_blocked_hist: Vec<(u64, u64)>,
    pub offcpu_runnable_ns: Summary,
    pub offcpu_runnable_hist: Vec<(u64, u64)>,
}

fn hist(d: &Distribution) -> (Summary, Vec<(u64, u64)>) {
    (d.summary(), d.nonzero_buckets())
}

pub fn build(
    caps: HandoffCaps,
    from: &HandoffSample,
    to: &HandoffSample,
    names: Names<'_>,
) -> HandoffReport {
    let d = to.since(from);
    let name = |tid: u32| {
        let (os, py) = names(tid);
        py.unwrap_or(os)
    };
    let mut threads: Vec<ThreadHandoffReport> = d
        .threads
        .iter()
        .filter(|(_, c)| {
            c.forced_drops
                + c.voluntary_drops
                + c.drop_requests
                + c.requests_lost
                + c.offcpu_blocked_count
                + c.offcpu_runnable_count
                > 0
        })
        .map(|(&tid, c)| {
            let (forced, voluntary) = if caps.forced_known {
                (Some(c.forced_drops), c.voluntary_drops)
            } else {
                (None, c.voluntary_drops + c.forced_drops)
            };
            ThreadHandoffReport {
                tid,
                name: name(tid),
                forced_drops: forced,
                voluntary_drops: voluntary,
                drop_requests: c.drop_requests,
                requests_lost: c.requests_lost,
                offcpu_blocked: Spans {
                    count: c.offcpu_blocked_count,
                    total_ns: c.offcpu_blocked_ns,
                },
                offcpu_runnable: Spans {
                    count: c.offcpu_runnable_count,
                    total_ns: c.offcpu_runnable_ns,
                },
            }
        })
        .collect();
    let drops = |t: &ThreadHandoffReport| t.forced_drops.unwrap_or(0) + t.voluntary_drops;
    threads.sort_by(|a, b| drops(b).cmp(&drops(a)).then(a.tid.cmp(&b.tid)));
    let mut pairs: Vec<PairReport> = d
        .pairs
        .iter()
        .map(|(&(from, to), &(count, wait_ns))| PairReport {
            from,
            from_name: (from != 0).then(|| name(from)),
            to,
            to_name: name(to),
            count,
            wait_ns,
        })
        .collect();
    pairs.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.from.cmp(&b.from))
            .then(a.to.cmp(&b.to))
    });
    let (forced_latency_ns, forced_latency_hist) = hist(&d.forced_latency);
    let (offcpu_blocked_ns, offcpu_blocked_hist) = hist(&d.offcpu_blocked);
    let (offcpu_runnable_ns, offcpu_runnable_hist) = hist(&d.offcpu_runnable);
    HandoffReport {
        forced_known: caps.forced_known,
        offcpu: caps.offcpu,
        forced_drops: caps
            .forced_known
            .then(|| d.threads.values().map(|c| c.forced_drops).sum()),
        threads,
        pairs,
        pairs_lost: d.pairs_lost,
        forced_latency_ns,
        forced_latency_hist,
        offcpu_blocked_ns,
        offcpu_blocked_hist,
        offcpu_runnable_ns,
        offcpu_runnable_hist,
    }
}

/// Pairs shown in the terminal.
const TOP_PAIRS: usize = 5;

/// The terminal section; empty when no drop was seen.
pub fn render(h: &HandoffReport) -> String {
    let mut out = String::new();
    if h.threads.is_empty() {
        return out;
    }
    let how = if h.forced_known {
        "forced: a waiter's timed wait (the switch interval) asked the holder to drop"
    } else {
        "forced and voluntary drops are not told apart with this strategy"
    };
    let _ = writeln!(out, "Handoffs · {how}");
    let offcpu_cols = if h.offcpu {
        "  OFF-CPU HELD blocked  runnable"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "    TID  {:<16} {:>7} {:>7} {:>9} {:>7} {:>6}{offcpu_cols}",
        "THREAD", "DROPS", "FORCED", "VOLUNTARY", "ASKED", "LOST"
    );
    for t in h.threads.iter().take(20) {
        let forced = t.forced_drops.map_or("-".to_owned(), |f| f.to_string());
        let drops = t.forced_drops.unwrap_or(0) + t.voluntary_drops;
        let _ = write!(
            out,
            "  {:>5}  {:<16} {:>7} {:>7} {:>9} {:>7} {:>6}",
            t.tid,
            truncate(&t.name, 16),
            drops,
            forced,
            t.voluntary_drops,
            t.drop_requests,
            t.requests_lost
        );
        if h.offcpu {
            let _ = write!(
                out,
                "  {:>19} {:>9}",
                fmt_ns(t.offcpu_blocked.total_ns),
                fmt_ns(t.offcpu_runnable.total_ns)
            );
        }
        let _ = writeln!(out);
    }
    if !h.pairs.is_empty() {
        let _ = writeln!(
            out,
            "  who took it from whom (most often first; the taker's wait):"
        );
        for p in h.pairs.iter().take(TOP_PAIRS) {
            let from = match &p.from_name {
                Some(n) => format!("{n} ({})", p.from),
                None => "(not seen)".to_owned(),
            };
            let _ = writeln!(
                out,
                "    {:<28} → {:<28} {:>7} × · waited {}",
                truncate(&from, 28),
                truncate(&format!("{} ({})", p.to_name, p.to), 28),
                p.count,
                fmt_ns(p.wait_ns)
            );
        }
        if h.pairs.len() > TOP_PAIRS {
            let _ = writeln!(out, "    … and {} more pairs", h.pairs.len() - TOP_PAIRS);
        }
    }
    let l = &h.forced_latency_ns;
    if l.count > 0 {
        let _ = writeln!(
            out,
            "  after a forced drop, the GIL was free until the next thread ran with it: n={} p50 {} p99 {} max {}",
            l.count,
            fmt_ns(l.p50),
            fmt_ns(l.p99),
            fmt_ns(l.max)
        );
    }
    if h.offcpu {
        for (what, s, hist) in [
            (
                "blocked (asleep in the kernel)",
                &h.offcpu_blocked_ns,
                &h.offcpu_blocked_hist,
            ),
            (
                "runnable (preempted, no CPU)",
                &h.offcpu_runnable_ns,
                &h.offcpu_runnable_hist,
            ),
        ] {
            if s.count == 0 {
                let _ = writeln!(out, "  GIL held off-CPU, {what}: never");
                continue;
            }
            let _ = writeln!(
                out,
                "  GIL held off-CPU, {what}: {} in {} spans · p50 {} p99 {} max {}",
                fmt_ns(s.total),
                s.count,
                fmt_ns(s.p50),
                fmt_ns(s.p99),
                fmt_ns(s.max)
            );
            out.push_str(&bars(hist, 30));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::ThreadCounts;

    type Pair = ((u32, u32), crate::handoff::PairCounts);

    fn sample(pairs: &[Pair], forced: u64, voluntary: u64) -> HandoffSample {
        let mut s = HandoffSample {
            pairs: pairs.iter().copied().collect(),
            ..HandoffSample::default()
        };
        s.threads.insert(
            7,
            ThreadCounts {
                forced_drops: forced,
                voluntary_drops: voluntary,
                ..ThreadCounts::default()
            },
        );
        s
    }

    fn names(tid: u32) -> (String, Option<String>) {
        (format!("os-{tid}"), (tid == 7).then(|| "worker".to_owned()))
    }

    #[test]
    fn pairs_are_the_interval_s_own_most_first_and_unknown_droppers_have_no_name() {
        let from = sample(&[((7, 8), (5, 50))], 1, 1);
        let to = sample(
            &[((7, 8), (6, 80)), ((0, 7), (1, 3)), ((8, 7), (9, 90))],
            4,
            2,
        );
        let caps = HandoffCaps {
            forced_known: true,
            offcpu: false,
        };
        let r = build(caps, &from, &to, &names);
        let got: Vec<(u32, u32, u64, u64)> = r
            .pairs
            .iter()
            .map(|p| (p.from, p.to, p.count, p.wait_ns))
            .collect();
        // Ties: the earlier dropper first.
        assert_eq!(got, vec![(8, 7, 9, 90), (0, 7, 1, 3), (7, 8, 1, 30)]);
        assert_eq!(r.pairs[1].from_name, None);
        assert_eq!(r.pairs[0].to_name, "worker");
        assert_eq!(r.pairs[2].to_name, "os-8");
        assert_eq!(r.threads[0].forced_drops, Some(3));
        assert_eq!(r.threads[0].voluntary_drops, 1);
        assert_eq!(r.forced_drops, Some(3));
        assert!(render(&r).contains("worker (7)"));
    }

    #[test]
    fn without_the_timed_wait_every_drop_reads_as_not_forced() {
        let to = sample(&[], 4, 2);
        let caps = HandoffCaps {
            forced_known: false,
            offcpu: false,
        };
        let r = build(caps, &HandoffSample::default(), &to, &names);
        assert_eq!(r.threads[0].forced_drops, None);
        assert_eq!(r.threads[0].voluntary_drops, 6);
        assert_eq!(r.forced_drops, None);
        assert!(render(&r).contains("not told apart"));
    }
}
