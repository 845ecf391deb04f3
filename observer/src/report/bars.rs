//! Histograms drawn as horizontal bars, for the GIL and the lock reports.
use std::fmt::Write as _;

use observer_common::{bucket_index, bucket_lower};

use super::format::fmt_ns;

/// Most rows a drawn histogram gets: coarser rows beat a scrolling screen.
const MAX_BAR_ROWS: usize = 12;

/// The rows a histogram is drawn with, in the terminal and in the HTML report: the count of
/// zero-length spans, then (lower, upper, count) rows of quarter octaves, coarser when the range
/// is wide.
pub fn rows(hist: &[(u64, u64)]) -> (u64, Vec<(u64, u64, u64)>) {
    // Zero-length spans (an uncontended take: the GIL was free) get a line of their own: drawn on
    // the log scale they would stretch it over many empty octaves down to 0 ns.
    let at_once: u64 = hist.iter().filter(|b| b.0 <= 1).map(|b| b.1).sum();
    let hist: Vec<(u64, u64)> = hist.iter().copied().filter(|b| b.0 > 1).collect();
    let mut group = 2; // kernel buckets per row: 2 of the 8 per octave = quarter octaves
    let rows = loop {
        let rows = regroup(&hist, group);
        if rows.len() <= MAX_BAR_ROWS || group >= 64 {
            break rows;
        }
        group *= 2;
    };
    (at_once, rows)
}

/// A histogram as horizontal bars: quarter-octave rows, coarser when the range is wide.
pub fn bars(hist: &[(u64, u64)], width: usize) -> String {
    let (at_once, rows) = rows(hist);
    let peak = rows
        .iter()
        .map(|r| r.2)
        .max()
        .unwrap_or(0)
        .max(at_once)
        .max(1);
    let mut out = String::new();
    if at_once > 0 {
        let n = ((at_once as f64 / peak as f64) * width as f64).ceil() as usize;
        let _ = writeln!(
            out,
            "    {:>17} │{:<width$} {at_once}",
            "0 (at once)",
            "█".repeat(n)
        );
    }
    for (lo, hi, count) in rows {
        let n = ((count as f64 / peak as f64) * width as f64).ceil() as usize;
        let _ = writeln!(
            out,
            "    {:>7} – {:<7} │{:<width$} {count}",
            fmt_ns(lo),
            fmt_ns(hi),
            "█".repeat(n)
        );
    }
    out
}

/// Merges kernel buckets `group` at a time into (lower, upper, count) rows, keeping empty rows
/// between non-empty ones so gaps show.
fn regroup(hist: &[(u64, u64)], group: usize) -> Vec<(u64, u64, u64)> {
    let Some(first) = hist.first() else {
        return Vec::new();
    };
    let row_of = |upper: u64| bucket_index(upper - 1) / group;
    let (lo_row, hi_row) = (row_of(first.0), row_of(hist[hist.len() - 1].0));
    let mut rows: Vec<(u64, u64, u64)> = (lo_row..=hi_row)
        .map(|r| {
            let lo = bucket_lower(r * group);
            (lo, bucket_lower((r + 1) * group).max(lo + 1), 0)
        })
        .collect();
    for &(upper, count) in hist {
        rows[row_of(upper) - lo_row].2 += count;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_cover_the_range() {
        let hist = vec![(4_194_304 + 524_288, 10), (5_242_880 + 524_288, 30)];
        let text = bars(&hist, 10);
        assert!(text.contains("██████████ 30"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
        // Zero-length spans do not stretch the scale down to 0 ns.
        let with_zero = vec![
            (1, 500),
            (4_194_304 + 524_288, 10),
            (5_242_880 + 524_288, 30),
        ];
        let text = bars(&with_zero, 10);
        assert!(text.starts_with("          0 (at once) │"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
        // A range from 1µs to 1s still fits on a screen.
        let wide: Vec<(u64, u64)> = (10..30).map(|p| (1u64 << p, 1)).collect();
        assert!(
            bars(&wide, 10).lines().count() <= MAX_BAR_ROWS,
            "{}",
            bars(&wide, 10)
        );
    }
}
