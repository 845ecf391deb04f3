//! The overhead budget (`--max-overhead PCT`): estimate what the probes cost the target from
//! the traps it takes, and past the budget observe in windows (duty cycling) instead of always.
//!
//! Cost model: every probe hit is a trap the target's thread pays for, in the kernel, on its own
//! CPU time, at the cost of its kind measured at start (probe/cost.rs, probe/calibrate.rs). The
//! estimate is traps per second × cost per trap, as a share of one CPU.
//!
//! Duty cycling ([`DutyCycle`]) has a price of its own: attaching and detaching rewrite the
//! target's text pages under its memory-map lock. Each switch is timed and charged, windows are
//! long (one attach + detach per [`PERIOD`]), and cycling happens only where it pays: far over the
//! budget ([`CYCLE_FROM`]) with a saving well above the switches' cost ([`PAYS_BY`]). Closer to the
//! budget every GIL cycle is observed and the report says what that costs. When sampling, the
//! report says `sampled` with the coverage, and nothing is scaled up.
use std::time::Duration;

/// How often the cost is judged while the probes are attached: reading the trap counters is
/// cheap (one map lookup), unlike attaching or detaching, so judging is frequent and switching rare.
pub const CHECK: Duration = Duration::from_millis(100);
/// The first judgement comes sooner: on a target where every trap is dear (single-stepped probes
/// on a hot path) the first window is the one the budget cannot bound, so it is kept short.
pub const FIRST_CHECK: Duration = Duration::from_millis(50);
/// One attach + detach cycle, on + off, lasts at least this long. Attaching and detaching
/// rewrite the target's text pages under its memory-map lock; at once a second that showed as
/// p99 latency in a web server (bench, Flask row), so the churn is kept to one pair per period.
pub const PERIOD: Duration = Duration::from_secs(10);
/// Shortest probed window: long enough to see plenty of GIL cycles even when the probes slow
/// every cycle down a lot.
pub const MIN_WINDOW: Duration = Duration::from_millis(100);
/// Cycle only when the full cost is at least this many times the budget: closer to it, the
/// saving is small and the switches' effects (page rewrites, lock holds) not all counted.
pub const CYCLE_FROM: f64 = 2.0;
/// A short probed phase (under [`JUDGE_AFTER`]) decides to cycle only this far over the budget:
/// a few tens of milliseconds can be a burst (a program starting up), and a wrong decision
/// costs an off window; this far over, every millisecond probed is dear and the traps many.
pub const URGENT: f64 = 4.0;
/// A phase this long judges with [`CYCLE_FROM`].
pub const JUDGE_AFTER: Duration = Duration::from_millis(500);
/// ...and only when a period's saving is at least this many times what its switches cost.
pub const PAYS_BY: f64 = 4.0;
/// What a switch is assumed to cost before one has been measured.
pub const SWITCH_GUESS: Duration = Duration::from_millis(2);

/// Share of the time the probes may be attached to stay within `max_pct`.
pub fn coverage_for(cost_pct: f64, max_pct: f64) -> f64 {
    if cost_pct <= max_pct || cost_pct <= 0.0 {
        1.0
    } else {
        (max_pct / cost_pct).clamp(0.0, 1.0)
    }
}

/// What the session must do after a judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Attach,
    Detach,
    /// Keep the probes as they are.
    Stay,
}

/// The duty cycle, as a budget account: the budget pays in `max_pct` of a CPU all the time,
/// probed time takes out the estimated cost of the traps, and every attach or detach takes out
/// what it measured. Probes come off when the account runs dry, and go back on only once it
/// holds a whole window plus both switches: so the run's average stays within the budget from
/// the first off window on (pay first, probe after), whatever the bench or the user measures.
///
/// Inputs are plain numbers: the estimated cost in % of one CPU of the traps taken since the
/// last judgement (whatever model estimates it) and the measured duration of each switch.
#[derive(Debug, Clone)]
pub struct DutyCycle {
    max_pct: f64,
    on: bool,
    /// Duty cycling chosen (the full cost is far enough over the budget for it to pay).
    cycling: bool,
    /// Last judgement (or switch) and the next one.
    last_ns: u64,
    next_ns: u64,
    /// When the current probed phase started, and what it has cost so far (ns of CPU).
    phase_start_ns: u64,
    phase_cost_ns: f64,
    /// The account, ns of CPU: positive is budget in hand.
    credit_ns: f64,
    /// What one switch (attach or detach) costs, ns: the last measured, smoothed.
    switch_ns: f64,
    /// Total time probed, closed phases only.
    probed_ns: u64,
    /// The last estimate of the full-coverage cost, % of one CPU.
    pub estimated_full_pct: f64,
    /// The coverage the last estimate asked for.
    pub target_coverage: f64,
    /// Whether any phase ran with the probes off.
    pub sampled: bool,
    /// Attaches and detaches made, and their measured time (ns).
    pub switches: u64,
    pub switch_total_ns: u64,
}

impl DutyCycle {
    /// Starts with the probes attached at `now_ns`.
    pub fn new(max_pct: f64, now_ns: u64) -> DutyCycle {
        DutyCycle {
            max_pct,
            on: true,
            cycling: false,
            last_ns: now_ns,
            next_ns: now_ns + FIRST_CHECK.as_nanos() as u64,
            phase_start_ns: now_ns,
            phase_cost_ns: 0.0,
            credit_ns: 0.0,
            switch_ns: SWITCH_GUESS.as_nanos() as f64,
            probed_ns: 0,
            estimated_full_pct: 0.0,
            target_coverage: 1.0,
            sampled: false,
            switches: 0,
            switch_total_ns: 0,
        }
    }

    #[cfg(test)]
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// When the next judgement is due (CLOCK_MONOTONIC ns).
    pub fn next_ns(&self) -> u64 {
        self.next_ns
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

    /// A switch the session made took `took_ns` (measured around the attach or detach), ending
    /// at `now_ns`: it is charged to the account as if the target had stalled for all of it
    /// (breakpoints go one by one, the last ones at the end of a detach, and trap meanwhile).
    /// A detach is not probed time: its first breakpoint goes at once, and with it the start of
    /// every new GIL wait, so what the others still see is not a sample of the GIL.
    pub fn switched(&mut self, now_ns: u64, took_ns: u64) {
        self.switches += 1;
        self.switch_total_ns += took_ns;
        self.switch_ns = 0.5 * self.switch_ns + 0.5 * took_ns as f64;
        self.credit_ns -= took_ns as f64;
        self.pay_in(now_ns);
        if self.on {
            // The window measures from here: traps taken while attaching were charged above.
            self.phase_start_ns = now_ns;
            self.phase_cost_ns = 0.0;
            self.next_ns = now_ns + FIRST_CHECK.as_nanos() as u64;
        }
    }

    /// The budget's income since the last look.
    fn pay_in(&mut self, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns) as f64;
        self.credit_ns += dt * self.max_pct / 100.0;
        // Saving up for more than two periods' windows would let a burst run long unchecked.
        let cap = (2.0 * PERIOD.as_nanos() as f64 * self.max_pct / 100.0)
            .max(2.0 * (self.window_cost_ns() + 2.0 * self.switch_ns));
        self.credit_ns = self.credit_ns.min(cap);
        self.last_ns = now_ns;
    }

    /// Called at (or after) [`next_ns`](Self::next_ns). `cost_pct`: the estimated cost of the
    /// traps taken since the last call, % of one CPU (meaningless while off).
    pub fn next(&mut self, now_ns: u64, cost_pct: f64) -> Switch {
        let dt = now_ns.saturating_sub(self.last_ns) as f64;
        let on_cost_pct = if self.on { cost_pct.max(0.0) } else { 0.0 };
        if self.on {
            let cost = dt * cost_pct.max(0.0) / 100.0;
            self.credit_ns -= cost;
            self.phase_cost_ns += cost;
        }
        self.pay_in(now_ns);
        let check = CHECK.as_nanos() as u64;
        if !self.on {
            // Off until the account holds a whole window and both switches.
            let need = self.window_cost_ns() + 2.0 * self.switch_ns;
            if self.credit_ns >= need {
                self.on = true;
                self.phase_start_ns = now_ns;
                self.phase_cost_ns = 0.0;
                self.next_ns = now_ns + check;
                return Switch::Attach;
            }
            self.next_ns = now_ns + self.ns_until(need);
            return Switch::Stay;
        }
        let phase = now_ns.saturating_sub(self.phase_start_ns).max(1) as f64;
        self.estimated_full_pct = self.phase_cost_ns / phase * 100.0;
        let urgent = URGENT * self.max_pct;
        if on_cost_pct >= urgent && on_cost_pct > self.estimated_full_pct {
            // A surge (a target that was idle, then busy): the phase's average is stale.
            self.estimated_full_pct = on_cost_pct;
        }
        self.target_coverage = coverage_for(self.estimated_full_pct, self.max_pct);
        let settled = phase >= JUDGE_AFTER.as_nanos() as f64
            || self.estimated_full_pct >= urgent
            || self.sampled;
        self.cycling = settled && self.pays();
        // Off when cycling pays and the account cannot pay for the detach on top of this
        // window (the first window: as soon as the cost is known to be far over the budget).
        if self.cycling && self.credit_ns <= self.switch_ns {
            self.probed_ns += now_ns.saturating_sub(self.phase_start_ns);
            self.on = false;
            self.sampled = true;
            let need = self.window_cost_ns() + 2.0 * self.switch_ns;
            self.next_ns = now_ns + self.ns_until(need);
            return Switch::Detach;
        }
        if !self.cycling {
            // Observing everything by choice (under the budget, or too close to it for cycling
            // to pay): the overrun is not a debt to repay later with a long off window.
            self.credit_ns = self.credit_ns.max(0.0);
        }
        self.next_ns = now_ns + check;
        if self.cycling {
            // Judge again when the window's money runs out, if that comes before the next check.
            let net = (self.estimated_full_pct - self.max_pct) / 100.0;
            if net > 0.0 {
                let left = ((self.credit_ns - self.switch_ns) / net).max(0.0) as u64;
                self.next_ns = now_ns + left.clamp(1_000_000, check);
            }
        }
        Switch::Stay
    }

    /// Whether duty cycling is worth it at the current estimate: far enough over the budget,
    /// and a period's saving well above what its two switches cost.
    fn pays(&self) -> bool {
        let full = self.estimated_full_pct / 100.0;
        let max = self.max_pct / 100.0;
        if full < CYCLE_FROM * max {
            return false;
        }
        let window = self.window_ns();
        let period = (window * full + 2.0 * self.switch_ns) / max;
        let saving = (period - window) * full - 2.0 * self.switch_ns;
        saving >= PAYS_BY * 2.0 * self.switch_ns
    }

    /// The next probed window, ns: its share of a period is the target coverage, and it is
    /// never shorter than [`MIN_WINDOW`].
    fn window_ns(&self) -> f64 {
        (self.target_coverage * PERIOD.as_nanos() as f64).max(MIN_WINDOW.as_nanos() as f64)
    }

    /// What the next probed window will cost at the current estimate, ns of CPU.
    fn window_cost_ns(&self) -> f64 {
        self.window_ns() * self.estimated_full_pct / 100.0
    }

    /// Time until the account holds `need`, ns (at least a millisecond).
    fn ns_until(&self, need: f64) -> u64 {
        let rate = (self.max_pct / 100.0).max(1e-9);
        (((need - self.credit_ns) / rate).max(0.0) as u64).max(1_000_000)
    }
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

    #[test]
    fn coverage_stays_within_the_budget() {
        assert_eq!(coverage_for(2.3, 5.0), 1.0);
        assert!((coverage_for(23.4, 5.0) - 5.0 / 23.4).abs() < 1e-12);
        assert_eq!(coverage_for(0.0, 5.0), 1.0);
    }

    /// A target whose full cost is `full_pct(t)` while probed, each switch taking `switch_ms`,
    /// run for `secs`: what the account spent over time, as (time, cumulative cost) at every
    /// judgement, and the switches.
    struct Run {
        d: DutyCycle,
        /// (now, traps + switches so far), ns.
        spent: Vec<(u64, f64)>,
        attaches: u64,
        detaches: u64,
    }

    fn simulate(max: f64, secs: u64, switch_ms: u64, full_pct: impl Fn(u64) -> f64) -> Run {
        let mut d = DutyCycle::new(max, 0);
        let (mut now, mut spent) = (0u64, 0.0f64);
        let mut run_spent = Vec::new();
        let (mut attaches, mut detaches) = (0, 0);
        while now < secs * 1000 * MS {
            let next = d.next_ns();
            assert!(next > now, "judgements move forward");
            if d.is_on() {
                spent += (next - now) as f64 * full_pct(now) / 100.0;
            }
            now = next;
            match d.next(now, full_pct(now)) {
                Switch::Stay => {}
                s => {
                    if s == Switch::Attach {
                        attaches += 1;
                    } else {
                        detaches += 1;
                    }
                    now += switch_ms * MS;
                    spent += (switch_ms * MS) as f64;
                    d.switched(now, switch_ms * MS);
                }
            }
            run_spent.push((now, spent));
        }
        Run {
            d,
            spent: run_spent,
            attaches,
            detaches,
        }
    }

    #[test]
    fn under_budget_stays_attached() {
        let r = simulate(5.0, 60, 2, |_| 2.3);
        assert_eq!(r.attaches + r.detaches, 0);
        assert!(!r.d.sampled);
        assert_eq!(r.d.probed_ns(60_000 * MS), 60_000 * MS);
    }

    #[test]
    fn modestly_over_budget_stays_attached() {
        // 1.5 times the budget: cycling would save little and churn the target's pages.
        let r = simulate(5.0, 60, 2, |_| 7.5);
        assert_eq!(r.attaches + r.detaches, 0);
        assert!(!r.d.sampled);
        assert!((r.d.estimated_full_pct - 7.5).abs() < 1e-6);
    }

    #[test]
    fn far_over_budget_keeps_the_run_within_it_with_little_churn() {
        // Single-stepped probes on a GIL-cycle loop: the traps take the whole CPU.
        let (max, secs) = (5.0, 120);
        let r = simulate(max, secs, 5, |_| 100.0);
        assert!(r.d.sampled);
        // The first window is cut short at the first judgement.
        let first_off = r.spent.iter().find(|(t, _)| *t > 0).expect("judged");
        assert!(first_off.0 <= (FIRST_CHECK + Duration::from_millis(5)).as_nanos() as u64);
        // From two seconds on, the run's average (traps and switches) never exceeds the budget.
        for &(t, spent) in r.spent.iter().filter(|(t, _)| *t >= 2000 * MS) {
            let avg = spent / t as f64 * 100.0;
            assert!(avg <= max * 1.02, "average {avg:.2}% at {} ms", t / MS);
        }
        // One attach + detach per period at most.
        let pairs_per_s = r.detaches as f64 / secs as f64;
        assert!(
            pairs_per_s <= 1.0 / PERIOD.as_secs_f64() + 0.01,
            "{pairs_per_s} pairs/s"
        );
        assert!(r.attaches >= 5, "still samples: {} windows", r.attaches);
        let coverage = r.d.probed_ns(secs * 1000 * MS) as f64 / (secs * 1000 * MS) as f64;
        assert!(coverage < 0.05 && coverage > 0.02, "coverage {coverage}");
    }

    #[test]
    fn no_cycling_when_the_switches_eat_the_saving() {
        // 2.5 times the budget, but every attach or detach stalls the target for 400 ms.
        let r = simulate(5.0, 120, 400, |_| 12.5);
        assert!(
            r.detaches <= 1,
            "cycling stopped once switches were measured: {} detaches",
            r.detaches
        );
        assert!(r.d.is_on());
    }

    #[test]
    fn a_short_burst_at_the_start_is_not_judged_on() {
        // Three times the budget for the first 200 ms (a program starting up), then quiet.
        let r = simulate(5.0, 30, 2, |t| if t < 200 * MS { 15.0 } else { 1.0 });
        assert_eq!(r.attaches + r.detaches, 0);
        assert!(!r.d.sampled);
    }

    #[test]
    fn a_surge_after_idling_is_cut_at_once() {
        // Idle for 3 s, then single-stepped traps take the whole CPU.
        let r = simulate(5.0, 30, 5, |t| if t < 3000 * MS { 0.0 } else { 100.0 });
        assert!(r.d.sampled);
        let probed_after = r.d.probed_ns(30_000 * MS).saturating_sub(3000 * MS);
        assert!(
            probed_after < 1_500 * MS,
            "{} ms probed after the surge",
            probed_after / MS
        );
    }

    #[test]
    fn back_to_observing_everything_when_the_load_drops() {
        let r = simulate(5.0, 120, 2, |t| if t < 30_000 * MS { 100.0 } else { 1.0 });
        assert!(r.d.sampled);
        assert!(r.d.is_on());
        let last_attach = r.spent.last().expect("judged").0;
        assert!(r.d.probed_ns(last_attach) > 50_000 * MS);
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
