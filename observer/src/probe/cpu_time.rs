//! The target's own CPU time, to check the trap-cost estimate against (probe/cost.rs).
//!
//! Traps run in the kernel on the target's threads, so they show up as its system time. The
//! kernel's per-process figures (/proc/PID/stat) sum to its exact run time (what
//! /proc/PID/task/*/schedstat counts) and split it into user and system time by tick samples
//! (250 Hz here): fine over seconds. Before the probes are attached, the target's own share of
//! system time (s0) is measured; while observing, whatever system time exceeds that share is
//! the traps': trap = (system − s0 · cpu) / (1 − s0), the part of the CPU time that is neither
//! the target's user work nor the system calls that work makes.
use anyhow::Context as _;

/// A process's cumulative CPU time, ns.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    pub at_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
}

/// Baselines shorter than this (CPU time of the target) say too little about its system share.
const MIN_BASELINE_CPU_NS: u64 = 100_000_000;

impl CpuTime {
    pub fn read(pid: u32) -> anyhow::Result<CpuTime> {
        let at_ns = crate::collect::monotonic_ns();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        CpuTime::parse(&stat, at_ns)
    }

    fn parse(stat: &str, at_ns: u64) -> anyhow::Result<CpuTime> {
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed /proc/PID/stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the name.
        let ticks = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .context("malformed /proc/PID/stat")
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ns = |t: u64| t * 1_000_000_000 / hz;
        Ok(CpuTime {
            at_ns,
            user_ns: ns(ticks(11)?),
            system_ns: ns(ticks(12)?),
        })
    }

    pub fn cpu_ns(&self) -> u64 {
        self.user_ns + self.system_ns
    }

    fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            at_ns: self.at_ns.saturating_sub(earlier.at_ns),
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            system_ns: self.system_ns.saturating_sub(earlier.system_ns),
        }
    }
}

/// The target's CPU time before observing (baseline) and at the window's ends.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Its system share of CPU time while not observed.
    system_share: f64,
}

impl Baseline {
    /// From two readings taken before anything was attached; None when the target ran too
    /// little in between to tell.
    pub fn between(before: &CpuTime, after: &CpuTime) -> Option<Baseline> {
        let d = after.since(before);
        (d.cpu_ns() >= MIN_BASELINE_CPU_NS).then(|| Baseline {
            system_share: d.system_ns as f64 / d.cpu_ns() as f64,
        })
    }

    /// The traps' share of one CPU over the window `from`..`to`, in %.
    pub fn overhead_pct(&self, from: &CpuTime, to: &CpuTime) -> Option<f64> {
        let d = to.since(from);
        if d.at_ns == 0 || self.system_share >= 1.0 {
            return None;
        }
        let traps = (d.system_ns as f64 - self.system_share * d.cpu_ns() as f64)
            / (1.0 - self.system_share);
        Some((traps.max(0.0) / d.at_ns as f64) * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(at_ms: u64, user_ms: u64, system_ms: u64) -> CpuTime {
        CpuTime {
            at_ns: at_ms * 1_000_000,
            user_ns: user_ms * 1_000_000,
            system_ns: system_ms * 1_000_000,
        }
    }

    #[test]
    fn reads_the_kernels_format() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 5 0 0";
        let c = CpuTime::parse(line, 7).unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(c.user_ns, 250 * 1_000_000_000 / hz);
        assert_eq!(c.system_ns, 75 * 1_000_000_000 / hz);
    }

    #[test]
    fn traps_are_the_system_time_beyond_the_targets_own_share() {
        // Unobserved: 1 s of CPU, 40% of it system time (its syscalls).
        let b = Baseline::between(&t(0, 0, 0), &t(1000, 600, 400)).unwrap();
        // Observed for 1 s, still one busy CPU: 300 ms of traps leave 700 ms of its own work,
        // 40% of which is system time: 580 ms system, 420 ms user.
        let o = b
            .overhead_pct(&t(2000, 600, 400), &t(3000, 1020, 980))
            .unwrap();
        assert!((o - 30.0).abs() < 1e-9, "{o}");
        // A baseline with almost no CPU time says nothing.
        assert!(Baseline::between(&t(0, 0, 0), &t(1000, 10, 10)).is_none());
    }
}
