//! Numbers as the reports show them: durations with a unit, percentages, two decimals in JSON.

/// A duration with a unit chosen for its size, three significant digits: 850ns, 12.3µs, 4.98ms.
pub fn fmt_ns(ns: u64) -> String {
    let (v, unit) = match ns {
        0..1_000 => return format!("{ns}ns"),
        1_000..1_000_000 => (ns as f64 / 1e3, "µs"),
        1_000_000..1_000_000_000 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    let decimals = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    let mut num = format!("{v:.decimals$}");
    if num.contains('.') {
        num = num.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{num}{unit}")
}

/// A share in percent: one decimal below 10%, none above.
pub fn pct(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}%")
    } else {
        format!("{x:.1}%")
    }
}

/// Two decimals, for the JSON report's shares and rates.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// At most `width` characters, the last one `…` when cut.
pub fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_ns(850), "850ns");
        assert_eq!(fmt_ns(12_345), "12.3µs");
        assert_eq!(fmt_ns(4_980_000), "4.98ms");
        assert_eq!(fmt_ns(5_000_000), "5ms");
        assert_eq!(fmt_ns(123_456_789), "123ms");
        assert_eq!(fmt_ns(1_230_000_000), "1.23s");
    }

    #[test]
    fn shares_and_names() {
        assert_eq!(pct(4.44), "4.4%");
        assert_eq!(pct(44.4), "44%");
        assert_eq!(round2(1.23456), 1.23);
        assert_eq!(truncate("worker", 10), "worker");
        assert_eq!(truncate("ThreadPoolExecutor-0_0", 10), "ThreadPoo…");
    }
}
