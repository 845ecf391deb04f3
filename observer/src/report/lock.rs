//! The lock report (`--lock`, `--lock-fns`, `--mutexes`): one model, rendered by
//! `lock_terminal.rs` and written as JSON by `json.rs` (docs/json.md: `"kind": "locks"`).
use std::collections::HashMap;

use observer_common::{
    MUTEX_CUSTOM_ADDR_MASK, MUTEX_CUSTOM_PAIR_SHIFT, MUTEX_CUSTOM_TAG, MUTEX_PY_PAIR, MutexCounts,
};
use serde::Serialize;

use super::{EndReason, SCHEMA, format::round2};
use crate::{
    histogram::Summary,
    lock::{
        Named,
        collect::{LockSnapshot, ThreadLockSample},
    },
};

/// Event counts of a lock or of one thread on it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    /// Outermost acquisitions (completed lock calls that took the lock).
    pub acquisitions: u64,
    /// Acquisitions that slept in the kernel (a futex wait) because another thread held the lock.
    pub contended: u64,
    /// `pthread_mutex_trylock` calls that found it taken (EBUSY): no wait, no hold.
    pub trylock_busy: u64,
    /// Lock calls that returned without the lock (timedlock timeout, error).
    pub failed: u64,
    /// Re-acquisitions by the thread that already held it (recursive mutexes): no wait, no new hold.
    pub recursive: u64,
}

impl From<&MutexCounts> for Counts {
    fn from(c: &MutexCounts) -> Self {
        Self {
            acquisitions: c.acquisitions,
            contended: c.contended,
            trylock_busy: c.trylock_busy,
            failed: c.failed,
            recursive: c.recursive,
        }
    }
}

/// The spans of a lock or of one thread on it: summaries and non-empty histogram buckets.
#[derive(Debug, Clone, Serialize)]
pub struct LockTimes {
    pub wait_ns: Summary,
    pub hold_ns: Summary,
    pub cond_wait_ns: Summary,
    pub failed_wait_ns: Summary,
    pub wait_hist: Vec<(u64, u64)>,
    pub hold_hist: Vec<(u64, u64)>,
    pub cond_wait_hist: Vec<(u64, u64)>,
}

impl From<&ThreadLockSample> for LockTimes {
    fn from(s: &ThreadLockSample) -> Self {
        Self {
            wait_ns: s.wait.summary(),
            hold_ns: s.hold.summary(),
            cond_wait_ns: s.cond_wait.summary(),
            failed_wait_ns: s.failed_wait.summary(),
            wait_hist: s.wait.nonzero_buckets(),
            hold_hist: s.hold.nonzero_buckets(),
            cond_wait_hist: s.cond_wait.nonzero_buckets(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LockThread {
    pub tid: u32,
    pub name: String,
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(flatten)]
    pub times: LockTimes,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallSite {
    pub acquisitions: u64,
    pub contended: u64,
    /// Summed wait of the acquisitions made from this stack.
    pub wait_ns: u64,
    /// Innermost first: the function that called the lock function, then its callers.
    pub frames: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockEntry {
    /// The lock's address in the target (for custom locks: the identifying argument's value).
    pub addr: String,
    /// `pthread` (a pthread_mutex_t), `custom` (`--lock-fns`) or `python` (`--py-locks`: the
    /// address is the `PyThread_type_lock`, a `sem_t*`).
    pub kind: &'static str,
    /// What the user passed (`--lock` value, or `ACQUIRE:RELEASE` for custom locks); null in discovery.
    pub spec: Option<String>,
    /// The data symbol the address belongs to, `object:symbol[+offset]`, when there is one.
    pub symbol: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Share of wall time some thread held it (≤ 100 for a mutex).
    pub held_pct: f64,
    /// Summed waits of all threads over wall time (may exceed 100).
    pub wait_pct: f64,
    #[serde(flatten)]
    pub times: LockTimes,
    /// Sorted by total wait.
    pub threads: Vec<LockThread>,
    /// `--mutexes` only: the acquiring call stacks, most waiting first (at most 5).
    pub call_sites: Vec<CallSite>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    pub schema: u32,
    /// Always `locks`.
    pub kind: &'static str,
    pub pid: u32,
    /// `watch` (`--lock`/`--lock-fns`) or `discover` (`--mutexes`).
    pub mode: &'static str,
    pub duration_ns: u64,
    pub ended: EndReason,
    /// The probed functions, `object:function`.
    pub probes: Vec<String>,
    /// Watch mode: the named locks in command-line order, then custom instances by wait.
    /// Discover mode: every contended mutex, most waiting first.
    pub locks: Vec<LockEntry>,
    /// Lock events the kernel could not record (a map was full). 0 means the numbers are complete.
    pub lost_events: u64,
    /// `--mutexes`: call sites whose stack could not be stored (the stack map was full, or its
    /// hash collided): they are shown by the calling function alone.
    pub call_site_stacks_lost: u64,
    /// Kernel memory held by gilwatch's BPF maps at the end (the sum of their `memlock`).
    pub kernel_memory_bytes: u64,
    /// What the probes cost (runs without a GIL report; with one, its `sampling` says it).
    pub overhead: Option<crate::probe::cost::Overhead>,
}

/// What the report needs besides the measurements.
pub struct LockContext<'a> {
    pub pid: u32,
    pub discover: bool,
    pub probes: Vec<String>,
    pub named: &'a [Named],
    /// `--lock-fns` labels by pair index.
    pub custom_labels: &'a [String],
    /// The best name known for a thread (Python name, else OS name), if any; else the name the
    /// kernel recorded when the thread first used the lock.
    pub thread_name: &'a dyn Fn(u32) -> Option<String>,
    /// Data symbol of an address (discovery).
    pub describe: &'a dyn Fn(u64) -> Option<String>,
    /// Symbolized frames of a call site: (return address of the lock call, stack id).
    pub call_site: &'a dyn Fn(u64, i64) -> Vec<String>,
}

/// A kernel comm (NUL-padded, at most 16 bytes), or `tid N` when empty.
fn comm_name(comm: &[u8; 16], tid: u32) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    if end == 0 {
        return format!("tid {tid}");
    }
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Sum of counters.
fn add_counts(into: &mut MutexCounts, c: &MutexCounts) {
    into.acquisitions += c.acquisitions;
    into.contended += c.contended;
    into.trylock_busy += c.trylock_busy;
    into.failed += c.failed;
    into.recursive += c.recursive;
}

/// A thread's numbers over the interval between two snapshots.
fn delta(now: &ThreadLockSample, before: Option<&ThreadLockSample>) -> ThreadLockSample {
    let empty = ThreadLockSample::default();
    let b = before.unwrap_or(&empty);
    let c = |x: u64, y: u64| x.saturating_sub(y);
    ThreadLockSample {
        counts: MutexCounts {
            acquisitions: c(now.counts.acquisitions, b.counts.acquisitions),
            contended: c(now.counts.contended, b.counts.contended),
            trylock_busy: c(now.counts.trylock_busy, b.counts.trylock_busy),
            failed: c(now.counts.failed, b.counts.failed),
            recursive: c(now.counts.recursive, b.counts.recursive),
            comm: now.counts.comm,
        },
        wait: now.wait.since(&b.wait),
        hold: now.hold.since(&b.hold),
        cond_wait: now.cond_wait.since(&b.cond_wait),
        failed_wait: now.failed_wait.since(&b.failed_wait),
    }
}

fn active(s: &ThreadLockSample) -> bool {
    let c = &s.counts;
    c.acquisitions + c.trylock_busy + c.failed + c.recursive > 0
        || s.hold.count + s.cond_wait.count + s.wait.count > 0
}

fn entry(
    ctx: &LockContext<'_>,
    addr: u64,
    from: &LockSnapshot,
    to: &LockSnapshot,
    duration_ns: u64,
) -> LockEntry {
    let (total, threads) = thread_rows(ctx, addr, from, to);
    let custom = addr & MUTEX_CUSTOM_TAG != 0;
    let (spec, symbol) = spec_and_symbol(ctx, addr);
    let dur = duration_ns.max(1) as f64;
    LockEntry {
        addr: format!(
            "{:#x}",
            if custom {
                addr & MUTEX_CUSTOM_ADDR_MASK
            } else {
                addr
            }
        ),
        kind: if is_python(addr) {
            "python"
        } else if custom {
            "custom"
        } else {
            "pthread"
        },
        spec,
        symbol,
        counts: Counts::from(&total.counts),
        held_pct: round2(total.hold.total_ns as f64 * 100.0 / dur),
        wait_pct: round2(total.wait.total_ns as f64 * 100.0 / dur),
        times: LockTimes::from(&total),
        threads,
        call_sites: call_sites(ctx, addr, from, to),
    }
}

/// The threads active on the lock between two snapshots (most waiting first), and their sum.
fn thread_rows(
    ctx: &LockContext<'_>,
    addr: u64,
    from: &LockSnapshot,
    to: &LockSnapshot,
) -> (ThreadLockSample, Vec<LockThread>) {
    let empty = Default::default();
    let now = to.locks.get(&addr).unwrap_or(&empty);
    let before = from.locks.get(&addr);
    let mut total = ThreadLockSample::default();
    let mut threads: Vec<LockThread> = Vec::new();
    for (&tid, s) in now {
        let d = delta(s, before.and_then(|b| b.get(&tid)));
        if !active(&d) {
            continue;
        }
        add_counts(&mut total.counts, &d.counts);
        total.wait.add(&d.wait);
        total.hold.add(&d.hold);
        total.cond_wait.add(&d.cond_wait);
        total.failed_wait.add(&d.failed_wait);
        threads.push(LockThread {
            tid,
            name: (ctx.thread_name)(tid).unwrap_or_else(|| comm_name(&s.counts.comm, tid)),
            counts: Counts::from(&d.counts),
            times: LockTimes::from(&d),
        });
    }
    threads.sort_by(|a, b| {
        b.times
            .wait_ns
            .total
            .cmp(&a.times.wait_ns.total)
            .then(b.times.hold_ns.total.cmp(&a.times.hold_ns.total))
            .then(a.tid.cmp(&b.tid))
    });
    (total, threads)
}

/// A Python lock (`--py-locks`): a custom instance of the reserved pair.
fn is_python(addr: u64) -> bool {
    addr & MUTEX_CUSTOM_TAG != 0
        && (addr & !MUTEX_CUSTOM_TAG) >> MUTEX_CUSTOM_PAIR_SHIFT == MUTEX_PY_PAIR
}

/// What the user asked for (a named spec, a custom pair's label) and the symbol at the lock.
fn spec_and_symbol(ctx: &LockContext<'_>, addr: u64) -> (Option<String>, Option<String>) {
    if is_python(addr) {
        // A heap object: no symbol to find.
        (Some("--py-locks".to_owned()), None)
    } else if addr & MUTEX_CUSTOM_TAG != 0 {
        let pair = ((addr & !MUTEX_CUSTOM_TAG) >> MUTEX_CUSTOM_PAIR_SHIFT) as usize;
        let instance = addr & MUTEX_CUSTOM_ADDR_MASK;
        (
            ctx.custom_labels.get(pair).cloned(),
            (ctx.describe)(instance),
        )
    } else if let Some(n) = ctx.named.iter().find(|n| n.addr == addr) {
        (Some(n.spec.clone()), n.symbol.clone())
    } else {
        (None, (ctx.describe)(addr))
    }
}

/// The five call sites that waited most on the lock between two snapshots.
fn call_sites(
    ctx: &LockContext<'_>,
    addr: u64,
    from: &LockSnapshot,
    to: &LockSnapshot,
) -> Vec<CallSite> {
    // Stacks that symbolize the same are one call site (a call path can have two stack ids).
    let mut merged: HashMap<Vec<String>, CallSite> = HashMap::new();
    for site in to.sites.iter().filter(|s| s.addr == addr) {
        let e = from
            .sites
            .iter()
            .find(|f| f.addr == addr && f.caller == site.caller && f.stack_id == site.stack_id)
            .map(|f| f.numbers)
            .unwrap_or_default();
        let s = &site.numbers;
        let n = s.acquisitions.saturating_sub(e.acquisitions);
        if n == 0 {
            continue;
        }
        let frames = (ctx.call_site)(site.caller, site.stack_id);
        let m = merged.entry(frames.clone()).or_insert(CallSite {
            acquisitions: 0,
            contended: 0,
            wait_ns: 0,
            frames,
        });
        m.acquisitions += n;
        m.contended += s.contended.saturating_sub(e.contended);
        m.wait_ns += s.wait_ns.saturating_sub(e.wait_ns);
    }
    let mut sites: Vec<CallSite> = merged.into_values().collect();
    sites.sort_by(|a, b| {
        b.wait_ns
            .cmp(&a.wait_ns)
            .then(b.acquisitions.cmp(&a.acquisitions))
    });
    sites.truncate(5);
    sites
}

pub fn build(
    ctx: &LockContext<'_>,
    ended: EndReason,
    from: &LockSnapshot,
    to: &LockSnapshot,
) -> LockReport {
    let duration_ns = to.at_ns.saturating_sub(from.at_ns).max(1);
    let mut locks: Vec<LockEntry> = ctx
        .named
        .iter()
        .map(|n| entry(ctx, n.addr, from, to, duration_ns))
        .collect();
    let mut others: Vec<LockEntry> = to
        .locks
        .keys()
        .filter(|a| !ctx.named.iter().any(|n| n.addr == **a))
        .filter(|&&a| ctx.discover || a & MUTEX_CUSTOM_TAG != 0)
        .map(|&a| entry(ctx, a, from, to, duration_ns))
        // Discovery lists the mutexes threads contended on; custom instances need activity.
        .filter(|e| {
            if e.kind == "pthread" {
                e.counts.contended > 0 || e.counts.trylock_busy > 0
            } else {
                !e.threads.is_empty()
            }
        })
        .collect();
    others.sort_by(|a, b| {
        b.times
            .wait_ns
            .total
            .cmp(&a.times.wait_ns.total)
            .then(b.counts.contended.cmp(&a.counts.contended))
    });
    locks.extend(others);
    LockReport {
        schema: SCHEMA,
        kind: "locks",
        pid: ctx.pid,
        mode: if ctx.discover { "discover" } else { "watch" },
        duration_ns,
        ended,
        probes: ctx.probes.clone(),
        locks,
        lost_events: to.lost_events.saturating_sub(from.lost_events),
        call_site_stacks_lost: to
            .call_site_stacks_lost
            .saturating_sub(from.call_site_stacks_lost),
        kernel_memory_bytes: to.kernel_memory_bytes,
        overhead: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use observer_common::bucket_index;

    use super::*;
    use crate::histogram::Distribution;

    fn sample(acq: u64, waits: &[u64], holds: &[u64]) -> ThreadLockSample {
        let dist = |vals: &[u64]| {
            let mut d = Distribution::default();
            for &v in vals {
                d.count += 1;
                d.total_ns += v;
                d.max_ns = d.max_ns.max(v);
                d.buckets[bucket_index(v)] += 1;
            }
            d
        };
        ThreadLockSample {
            counts: MutexCounts {
                acquisitions: acq,
                contended: acq / 2,
                ..Default::default()
            },
            wait: dist(waits),
            hold: dist(holds),
            ..Default::default()
        }
    }

    fn ctx<'a>(named: &'a [Named], discover: bool) -> LockContext<'a> {
        LockContext {
            pid: 1,
            discover,
            probes: vec![],
            named,
            custom_labels: &[],
            thread_name: &|tid| (tid != 2).then(|| format!("t{tid}")),
            describe: &|a| (a == 0x2000).then(|| "prog:hot_lock".to_owned()),
            call_site: &|_, _| vec![],
        }
    }

    fn snap(at: u64, locks: Vec<(u64, u32, ThreadLockSample)>) -> LockSnapshot {
        let mut m: BTreeMap<u64, BTreeMap<u32, ThreadLockSample>> = BTreeMap::new();
        for (a, t, s) in locks {
            m.entry(a).or_default().insert(t, s);
        }
        LockSnapshot {
            at_ns: at,
            locks: m,
            ..Default::default()
        }
    }

    #[test]
    fn discovery_ranks_by_total_wait_and_names_symbols() {
        let to = snap(
            1_000_000_000,
            vec![
                (0x1000, 1, sample(10, &[1_000_000; 10], &[100; 10])),
                (0x2000, 1, sample(10, &[9_000_000; 10], &[100; 10])),
                (0x2000, 2, {
                    let mut s = sample(4, &[5_000_000; 4], &[100; 4]);
                    s.counts.comm[..6].copy_from_slice(b"worker");
                    s
                }),
                // Never contended: not listed in discovery.
                (0x3000, 1, sample(0, &[], &[])),
            ],
        );
        let r = build(&ctx(&[], true), EndReason::Duration, &snap(0, vec![]), &to);
        assert_eq!(r.locks.len(), 2);
        assert_eq!(r.locks[0].addr, "0x2000");
        assert_eq!(r.locks[0].symbol.as_deref(), Some("prog:hot_lock"));
        assert_eq!(r.locks[0].counts.acquisitions, 14);
        assert_eq!(r.locks[0].threads[0].tid, 1, "most waiting thread first");
        assert_eq!(r.locks[0].threads[0].name, "t1");
        assert_eq!(r.locks[0].threads[1].name, "worker", "the kernel's comm");
        assert_eq!(r.locks[1].addr, "0x1000");
        assert_eq!(r.locks[0].times.wait_ns.total, 110_000_000);
        assert!((r.locks[0].wait_pct - 11.0).abs() < 0.01);
    }

    #[test]
    fn named_locks_are_reported_even_when_idle_and_intervals_subtract() {
        let named = [Named {
            addr: 0x5000,
            spec: "g".into(),
            symbol: Some("prog:g".into()),
        }];
        let from = snap(0, vec![(0x5000, 7, sample(2, &[10, 10], &[20, 20]))]);
        let to = snap(
            10,
            vec![(0x5000, 7, sample(3, &[10, 10, 30], &[20, 20, 40]))],
        );
        let r = build(&ctx(&named, false), EndReason::Running, &from, &to);
        assert_eq!(r.locks.len(), 1);
        assert_eq!(r.locks[0].counts.acquisitions, 1);
        assert_eq!(r.locks[0].times.hold_ns.total, 40);
        let idle = build(&ctx(&named, false), EndReason::Duration, &from, &from);
        assert_eq!(idle.locks.len(), 1);
        assert!(idle.locks[0].threads.is_empty());
    }

    #[test]
    fn custom_instances_lose_their_tag() {
        let a = MUTEX_CUSTOM_TAG | (1 << MUTEX_CUSTOM_PAIR_SHIFT) | 0x7f00_0000_1234;
        let to = snap(10, vec![(a, 3, sample(1, &[5], &[5]))]);
        let labels = ["a:b".to_owned(), "c:d".to_owned()];
        let mut c = ctx(&[], false);
        c.custom_labels = &labels;
        let r = build(&c, EndReason::Duration, &snap(0, vec![]), &to);
        assert_eq!(r.locks[0].addr, "0x7f0000001234");
        assert_eq!(r.locks[0].kind, "custom");
        assert_eq!(r.locks[0].spec.as_deref(), Some("c:d"));
    }
}
