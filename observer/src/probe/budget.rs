//! The overhead budget (`--max-overhead PCT`): estimate what the probes cost the target from
//! the traps it takes, and past the budget observe in windows (duty cycling) instead of always.
//!
//! Cost model: every probe hit is a trap the target's thread pays for, in the kernel, on its own
//! CPU time, at the cost of its kind measured at start (probe/cost.rs, probe/calibrate.rs). The
//! estimate is traps per second × cost per trap, as a share of one CPU.
//! Over budget, the probes are attached for `coverage` of the time only, in windows of at least
//! [`MIN_WINDOW`]: the report then says `sampled` with the coverage, and nothing is scaled up.
use std::time::Duration;

use crate::probe::cost::{Hits, TrapCosts};
/// Shortest probed window: attaching costs a few milliseconds, and a window must see enough
/// GIL cycles to measure the rate it is judged by.
pub const MIN_WINDOW: Duration = Duration::from_millis(100);
/// How long a fully probed phase lasts before the rate is judged again.
pub const FULL_PHASE: Duration = Duration::from_millis(200);
/// Never probe less than this share of the time (the report would say too little).
pub const MIN_COVERAGE: f64 = 0.01;

/// Share of the time the probes may be attached to stay within `max_pct`.
pub fn coverage_for(cost_pct: f64, max_pct: f64) -> f64 {
    if cost_pct <= max_pct || cost_pct <= 0.0 {
        1.0
    } else {
        (max_pct / cost_pct).clamp(MIN_COVERAGE, 1.0)
    }
}

/// What the session must do at a phase boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Attach,
    Detach,
    /// Keep the probes as they are.
    Stay,
}

/// The duty cycle: phases of probing and not probing, sized from the last probed phase's rate.
#[derive(Debug, Clone)]
pub struct DutyCycle {
    max_pct: f64,
    on: bool,
    phase_start_ns: u64,
    phase_len_ns: u64,
    /// What a trap of each kind costs (calibrated at start).
    costs: TrapCosts,
    /// Trap counters at the start of the current probed phase.
    hits_at_start: Hits,
    /// Total time probed, closed phases only.
    probed_ns: u64,
    /// The last estimate of the full-coverage cost, % of one CPU.
    pub estimated_full_pct: f64,
    /// The coverage the last estimate asked for.
    pub target_coverage: f64,
    /// Whether any phase ran with the probes off.
    pub sampled: bool,
    /// Where the run started, and the trap counters then: the long-run average is what the
    /// budget bounds, so the controller corrects for every trap taken, including those while
    /// probes were being attached or detached.
    start_ns: u64,
    hits_at_run_start: Hits,
}

impl DutyCycle {
    /// Starts with the probes attached at `now_ns`.
    pub fn new(max_pct: f64, costs: TrapCosts, now_ns: u64, hits: Hits) -> DutyCycle {
        DutyCycle {
            max_pct,
            costs,
            on: true,
            phase_start_ns: now_ns,
            phase_len_ns: FULL_PHASE.as_nanos() as u64,
            hits_at_start: hits,
            probed_ns: 0,
            estimated_full_pct: 0.0,
            target_coverage: 1.0,
            sampled: false,
            start_ns: now_ns,
            hits_at_run_start: hits,
        }
    }

    /// Attaching took until `now_ns`: the window measures from here (a probe attached before
    /// the others sees half cycles, which count as cost but not as measured time).
    pub fn attached_at(&mut self, now_ns: u64) {
        if self.on {
            self.phase_start_ns = self.phase_start_ns.max(now_ns);
        }
    }

    #[cfg(test)]
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// When the current phase ends (CLOCK_MONOTONIC ns).
    pub fn phase_end_ns(&self) -> u64 {
        self.phase_start_ns + self.phase_len_ns
    }

    /// Time probed up to `now_ns`, including the phase under way.
    pub fn probed_ns(&self, now_ns: u64) -> u64 {
        self.probed_ns
            + if self.on {
                now_ns.saturating_sub(self.phase_start_ns)
            } else {
                0
            }
    }

    /// Called at (or after) [`phase_end_ns`](Self::phase_end_ns) with the trap counters: decides
    /// the next phase.
    pub fn next(&mut self, now_ns: u64, hits: Hits) -> Switch {
        let elapsed = now_ns.saturating_sub(self.phase_start_ns).max(1);
        if !self.on {
            // Off phase over: probe again for a window sized by the last estimate.
            self.on = true;
            self.phase_start_ns = now_ns;
            self.phase_len_ns = window_ns(self.target_coverage);
            self.hits_at_start = hits;
            return Switch::Attach;
        }
        self.probed_ns += elapsed;
        let secs = elapsed as f64 / 1e9;
        self.estimated_full_pct = self.costs.cost_pct(&hits.since(&self.hits_at_start), secs);
        self.target_coverage = coverage_for(self.estimated_full_pct, self.max_pct);
        if self.target_coverage >= 1.0 {
            self.phase_start_ns = now_ns;
            self.phase_len_ns = FULL_PHASE.as_nanos() as u64;
            self.hits_at_start = hits;
            return Switch::Stay;
        }
        // Off for as long as keeps on/(on+off) at the target, given the window just probed
        // (counted as no longer than a regular window, so the first off window stays short)...
        let on = elapsed.min(window_ns(self.target_coverage)) as f64;
        let off = on * (1.0 / self.target_coverage - 1.0);
        // ...and at least until the run's average cost is back within the budget.
        let spent_ns = self.costs.ns(&hits.since(&self.hits_at_run_start));
        let even_at = self.start_ns as f64 + spent_ns / (self.max_pct / 100.0);
        let catch_up = even_at - now_ns as f64;
        self.on = false;
        self.sampled = true;
        self.phase_start_ns = now_ns;
        self.phase_len_ns = off.max(catch_up) as u64;
        Switch::Detach
    }
}

/// A probed window long enough to measure, short enough to keep the off windows short too
/// (one second per on+off cycle when the window is above the minimum).
fn window_ns(coverage: f64) -> u64 {
    let period = Duration::from_secs(1).as_nanos() as f64;
    ((coverage * period) as u64).max(MIN_WINDOW.as_nanos() as u64)
}

/// `--max-overhead`: a percentage of one CPU, or None for no budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxOverhead(pub Option<f64>);

pub fn parse_max_overhead(s: &str) -> Result<MaxOverhead, String> {
    if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("off") {
        return Ok(MaxOverhead(None));
    }
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (examples: 5, 0.5, none)"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!(
            "{s}: the budget must be above 0 (or `none` to observe all the time)"
        ));
    }
    Ok(MaxOverhead(Some(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    /// 1.17 µs per trap: the figures these tests were written with.
    const COSTS: TrapCosts = TrapCosts {
        emulated_ns: 1170.0,
        stepped_ns: 15_000.0,
        return_ns: 610.0,
        source: "assumed",
    };

    fn emulated(n: u64) -> Hits {
        Hits {
            emulated: n,
            ..Hits::default()
        }
    }

    #[test]
    fn coverage_stays_within_the_budget() {
        assert_eq!(coverage_for(2.3, 5.0), 1.0);
        assert!((coverage_for(23.4, 5.0) - 5.0 / 23.4).abs() < 1e-12);
        assert_eq!(coverage_for(1e9, 5.0), MIN_COVERAGE);
        assert_eq!(coverage_for(0.0, 5.0), 1.0);
    }

    #[test]
    fn under_budget_stays_attached() {
        let mut d = DutyCycle::new(5.0, COSTS, 0, Hits::default());
        // 500 ms at 10^4 cycles/s, two traps each: 2.34%.
        assert_eq!(d.next(500 * MS, emulated(10_000)), Switch::Stay);
        assert!(!d.sampled);
        assert_eq!(d.probed_ns(1000 * MS), 1000 * MS);
    }

    #[test]
    fn over_budget_cycles_to_the_target_coverage() {
        let mut d = DutyCycle::new(5.0, COSTS, 0, Hits::default());
        // 500 ms at 10^5 cycles/s (23.4%): coverage 5/23.4 ≈ 0.214.
        let mut now = 500 * MS;
        let mut hits = 100_000;
        assert_eq!(d.next(now, emulated(hits)), Switch::Detach);
        assert!(d.sampled);
        let target = d.target_coverage;
        assert!((target - 0.2137).abs() < 1e-3);
        // Run many on/off phases at the same rate: the probed share converges to the target.
        for _ in 0..200 {
            let end = d.phase_end_ns();
            if d.is_on() {
                hits += 200_000 * (end - now) / 1_000_000_000;
            }
            now = end;
            d.next(now, emulated(hits));
        }
        let coverage = d.probed_ns(now) as f64 / now as f64;
        assert!(
            (coverage - target).abs() < 0.03,
            "coverage {coverage}, target {target}"
        );
        // Windows are at least MIN_WINDOW long.
        assert!(window_ns(0.01) >= MIN_WINDOW.as_nanos() as u64);
    }

    #[test]
    fn the_flag_takes_percentages_or_none() {
        assert_eq!(parse_max_overhead("5"), Ok(MaxOverhead(Some(5.0))));
        assert_eq!(parse_max_overhead("0.5%"), Ok(MaxOverhead(Some(0.5))));
        assert_eq!(parse_max_overhead("none"), Ok(MaxOverhead(None)));
        assert!(parse_max_overhead("0").is_err());
        assert!(parse_max_overhead("lots").is_err());
    }
}
