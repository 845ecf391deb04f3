//! `--fail-if`: a condition on a report's figures that makes a runbook step fail (exit 7).
use std::fmt;

use serde::Serialize;

use super::figures::Figures;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    HeldPct,
    WaitPct,
    P50Wait,
    P99Wait,
    MaxWait,
    AcquisitionsPerSec,
}

const METRICS: &[(&str, Metric)] = &[
    ("held_pct", Metric::HeldPct),
    ("wait_pct", Metric::WaitPct),
    ("p50_wait", Metric::P50Wait),
    ("p99_wait", Metric::P99Wait),
    ("max_wait", Metric::MaxWait),
    ("acquisitions_per_sec", Metric::AcquisitionsPerSec),
];

impl Metric {
    fn is_duration(self) -> bool {
        matches!(self, Metric::P50Wait | Metric::P99Wait | Metric::MaxWait)
    }

    /// The figure, in the unit the condition's threshold is kept in (ns for durations).
    fn of(self, f: &Figures) -> f64 {
        match self {
            Metric::HeldPct => f.held_pct,
            Metric::WaitPct => f.wait_pct,
            Metric::P50Wait => f.p50_wait_ns as f64,
            Metric::P99Wait => f.p99_wait_ns as f64,
            Metric::MaxWait => f.max_wait_ns as f64,
            Metric::AcquisitionsPerSec => f.acquisitions_per_sec,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

/// One `--fail-if METRIC OP VALUE`, judged on the whole process's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub text: String,
    metric: Metric,
    op: Op,
    /// ns for durations.
    threshold: f64,
}

/// A condition judged: what it said, the value found, whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub condition: String,
    /// The figure (durations in ns).
    pub value: f64,
    pub held: bool,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let metric = self.condition.split_whitespace().next().unwrap_or("");
        let value = if metric.ends_with("_wait") {
            crate::report::format::fmt_ns(self.value as u64)
        } else {
            format!("{}", self.value)
        };
        let state = if self.held { "holds" } else { "does not hold" };
        write!(
            f,
            "--fail-if '{}' {state}: {metric} = {value}",
            self.condition
        )
    }
}

impl Condition {
    pub fn judge(&self, f: &Figures) -> Verdict {
        let v = self.metric.of(f);
        let held = match self.op {
            Op::Gt => v > self.threshold,
            Op::Ge => v >= self.threshold,
            Op::Lt => v < self.threshold,
            Op::Le => v <= self.threshold,
        };
        Verdict {
            condition: self.text.clone(),
            value: v,
            held,
        }
    }
}

/// Parses `wait_pct > 50`, `p99_wait>=10ms`, `acquisitions_per_sec < 100` (clap value parser).
pub fn parse(s: &str) -> Result<Condition, String> {
    let names = || {
        METRICS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let at = s.find(['<', '>']).ok_or_else(|| {
        format!(
            "expected METRIC OP VALUE, e.g. 'wait_pct > 50' or 'p99_wait > 10ms' (metrics: {})",
            names()
        )
    })?;
    let name = s[..at].trim();
    let rest = &s[at..];
    let (op, value) = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)]
        .iter()
        .find_map(|(t, op)| rest.strip_prefix(t).map(|v| (*op, v.trim())))
        .ok_or("expected an operator: >, >=, <, <=")?;
    let metric = METRICS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| *m)
        .ok_or_else(|| format!("unknown metric `{name}` (metrics: {})", names()))?;
    let threshold = if metric.is_duration() {
        parse_ns(value)?
    } else {
        value
            .trim_end_matches('%')
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("`{value}` is not a number"))?
    };
    let op_text = match op {
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
    };
    Ok(Condition {
        text: format!("{name} {op_text} {value}"),
        metric,
        op,
        threshold,
    })
}

/// `10ms`, `2.5ms`, `800us`, `1s`, `1500ns` → ns.
fn parse_ns(v: &str) -> Result<f64, String> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{v}` needs a unit: ns, us, ms or s (e.g. 10ms)"))?;
    let (num, unit) = v.split_at(split);
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        u => return Err(format!("unknown unit `{u}` in `{v}` (ns, us, ms, s)")),
    };
    num.parse::<f64>()
        .map(|n| n * scale)
        .map_err(|_| format!("`{v}` is not a duration (e.g. 10ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        Figures {
            threads: 3,
            held_pct: 95.0,
            wait_pct: 187.5,
            p50_wait_ns: 4_000_000,
            p99_wait_ns: 12_000_000,
            max_wait_ns: 20_000_000,
            acquisitions_per_sec: 400.0,
        }
    }

    #[test]
    fn conditions_parse_and_judge() {
        let f = figures();
        let held = |s: &str| parse(s).unwrap().judge(&f).held;
        assert!(held("wait_pct > 50"));
        assert!(!held("wait_pct>187.5"));
        assert!(held("wait_pct >= 187.5"));
        assert!(held("p99_wait > 10ms"));
        assert!(!held("p99_wait > 12.5ms"));
        assert!(held("max_wait <= 20000us"));
        assert!(held("acquisitions_per_sec < 1000"));
        assert!(held("held_pct > 90%"));
        assert_eq!(parse("wait_pct>50").unwrap().text, "wait_pct > 50");
    }

    #[test]
    fn bad_conditions_say_what_is_expected() {
        assert!(
            parse("wait_pct 50")
                .unwrap_err()
                .contains("METRIC OP VALUE")
        );
        assert!(
            parse("waits > 50")
                .unwrap_err()
                .contains("unknown metric `waits`")
        );
        assert!(parse("p99_wait > 10").unwrap_err().contains("needs a unit"));
        assert!(
            parse("p99_wait > 10h")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse("wait_pct > x").unwrap_err().contains("not a number"));
    }

    #[test]
    fn the_verdict_reads_as_one_line() {
        let v = parse("p99_wait > 10ms").unwrap().judge(&figures());
        assert_eq!(
            v.to_string(),
            "--fail-if 'p99_wait > 10ms' holds: p99_wait = 12ms"
        );
    }
}
