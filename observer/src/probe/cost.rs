//! What probe traps cost the target, by kind, and the estimate of a run's overhead from its traps.
//!
//! The kernel handles a uprobe hit in one of two ways that differ by some 30 times on a VM: the
//! probed instruction is either emulated (push, jmp, jcc, call, nop) or copied out of line and
//! single-stepped (everything else). A uretprobe adds the return's trip through the kernel on
//! top of its entry trap. The per-kind figures come from calibration on the machine gilwatch runs
//! on (probe/calibrate.rs); the counts of each kind from the kernel's per-site hit counters
//! (probe/attach.rs), each site's kind from probe/site.rs.
use serde::Serialize;

/// How the kernel handles a trap at a probe site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrapKind {
    /// The kernel emulates the instruction: one trap, no single-step.
    Emulated,
    /// The kernel executes a copy of the instruction out of line under single-step: a second
    /// exception, and the costliest kind by far.
    SingleStepped,
}

impl TrapKind {
    pub fn label(self) -> &'static str {
        match self {
            TrapKind::Emulated => "emulated",
            TrapKind::SingleStepped => "single-stepped",
        }
    }
}

/// Probe traps taken, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Hits {
    pub emulated: u64,
    pub stepped: u64,
    /// uretprobe returns (their entry trap is counted under its own kind).
    pub returns: u64,
    /// Blame's frame walks (on expired GIL waits only) and the kernel time they took, measured
    /// around each walk: counted as they are, not estimated.
    pub blame_walks: u64,
    pub blame_walk_ns: u64,
}

impl Hits {
    pub fn add(&mut self, kind: TrapKind, n: u64) {
        match kind {
            TrapKind::Emulated => self.emulated += n,
            TrapKind::SingleStepped => self.stepped += n,
        }
    }

    /// The traps taken after `earlier` (counters only grow; a reset reads as 0).
    pub fn since(&self, earlier: &Hits) -> Hits {
        Hits {
            emulated: self.emulated.saturating_sub(earlier.emulated),
            stepped: self.stepped.saturating_sub(earlier.stepped),
            returns: self.returns.saturating_sub(earlier.returns),
            blame_walks: self.blame_walks.saturating_sub(earlier.blame_walks),
            blame_walk_ns: self.blame_walk_ns.saturating_sub(earlier.blame_walk_ns),
        }
    }

    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.emulated + self.stepped + self.returns
    }
}

/// What one trap of each kind costs the target's thread, in ns of its CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrapCosts {
    pub emulated_ns: f64,
    pub stepped_ns: f64,
    /// A uretprobe's return, on top of its entry trap.
    pub return_ns: f64,
    /// `measured` (calibrated at start on this machine) or `assumed` (calibration failed: the
    /// figures below, measured on a 2-core VM with kernel 6.18).
    pub source: &'static str,
}

impl TrapCosts {
    /// Used when calibration cannot run: measured on the VM kind gilwatch is developed on
    /// (/work/shared/notes/probe-cost.md: 0.43 µs emulated, 15–16 µs single-stepped).
    pub const ASSUMED: TrapCosts = TrapCosts {
        emulated_ns: 450.0,
        stepped_ns: 15_000.0,
        return_ns: 400.0,
        source: "assumed",
    };

    pub fn of(&self, kind: TrapKind) -> f64 {
        match kind {
            TrapKind::Emulated => self.emulated_ns,
            TrapKind::SingleStepped => self.stepped_ns,
        }
    }

    /// CPU time the traps took from the target, ns.
    pub fn ns(&self, hits: &Hits) -> f64 {
        hits.emulated as f64 * self.emulated_ns
            + hits.stepped as f64 * self.stepped_ns
            + hits.returns as f64 * self.return_ns
            + hits.blame_walk_ns as f64
    }

    /// The traps' cost over `seconds` of wall time, in % of one CPU.
    pub fn cost_pct(&self, hits: &Hits, seconds: f64) -> f64 {
        if seconds <= 0.0 {
            return 0.0;
        }
        self.ns(hits) / (seconds * 1e9) * 100.0
    }
}

/// What observing cost a run without a GIL report (locks only): the estimate, and its check
/// from the target's CPU time (probe/cpu_time.rs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Overhead {
    /// % of one CPU over the run: traps × their calibrated cost.
    pub estimate_pct: f64,
    /// % of one CPU from the target's system time beyond its unobserved share; null without a
    /// baseline.
    pub measured_pct: Option<f64>,
    pub traps: Hits,
    pub trap_costs: TrapCosts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_traps_times_cost_per_kind() {
        let c = TrapCosts {
            emulated_ns: 500.0,
            stepped_ns: 15_000.0,
            return_ns: 300.0,
            source: "measured",
        };
        // 10^5 GIL cycles in one second, two emulated traps each: 10% of a CPU.
        let h = Hits {
            emulated: 200_000,
            ..Hits::default()
        };
        assert!((c.cost_pct(&h, 1.0) - 10.0).abs() < 1e-9);
        // The same with one single-stepped lock entry per cycle instead of an emulated one.
        let mut s = Hits::default();
        s.add(TrapKind::Emulated, 100_000);
        s.add(TrapKind::SingleStepped, 100_000);
        assert!((c.cost_pct(&s, 1.0) - 155.0).abs() < 1e-9);
        // Returns are charged on top of their entry trap.
        let r = Hits {
            returns: 1000,
            ..Hits::default()
        };
        assert!((c.ns(&r) - 300_000.0).abs() < 1e-9);
        // Blame's frame walks count at their measured kernel time.
        let w = Hits {
            blame_walks: 10,
            blame_walk_ns: 40_000,
            ..Hits::default()
        };
        assert!((c.ns(&w) - 40_000.0).abs() < 1e-9);
        assert_eq!(c.cost_pct(&h, 0.0), 0.0);
    }

    #[test]
    fn hits_since_saturate() {
        let a = Hits {
            emulated: 5,
            stepped: 2,
            returns: 1,
            ..Hits::default()
        };
        let b = Hits {
            emulated: 7,
            stepped: 2,
            returns: 0,
            ..Hits::default()
        };
        assert_eq!(
            b.since(&a),
            Hits {
                emulated: 2,
                ..Hits::default()
            }
        );
        assert_eq!(b.total(), 9);
    }
}
