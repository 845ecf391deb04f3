//! The kernel's span records → the slices of one report's window.
//!
//! The trace shows what the report counts: the report is the difference of two snapshots (at
//! `t0` and `t1`) that both count spans still open, so a span reaches into the report by its part
//! inside [t0, t1]. Here, likewise, each record is cut to the window, and the spans still open at
//! `t1` (the kernel's per-thread state, read with the last snapshot) are added up to `t1`.
use observer_common::{GilSpan, ThreadGilState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceKind {
    Wait,
    Hold,
}

/// One thread waiting for, or holding, the GIL from `start_ns` to `end_ns` (CLOCK_MONOTONIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub tid: u32,
    pub kind: SliceKind,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The slices of [t0, t1] from the records and the spans open at t1. Waits of no length (an
/// uncontended take) add nothing to a total and are left out.
pub fn slices(spans: &[GilSpan], open: &[(u32, ThreadGilState)], t0: u64, t1: u64) -> Vec<Slice> {
    let mut out = Vec::with_capacity(spans.len() * 2);
    let mut push = |tid, kind, start: u64, end: u64| {
        let start = start.max(t0);
        let end = end.min(t1);
        if end > start || (kind == SliceKind::Hold && end == start) {
            out.push(Slice {
                tid,
                kind,
                start_ns: start,
                end_ns: end,
            });
        }
    };
    for s in spans {
        // The moment the kernel recorded it (and the histogram counted it).
        let recorded = if s.released_ns != 0 {
            s.released_ns
        } else {
            s.acquired_ns
        };
        if recorded <= t0 || recorded > t1 {
            continue;
        }
        if s.wait_start_ns != 0 {
            push(s.tid, SliceKind::Wait, s.wait_start_ns, s.acquired_ns);
        }
        if s.released_ns != 0 {
            push(s.tid, SliceKind::Hold, s.acquired_ns, s.released_ns);
        }
    }
    for &(tid, st) in open {
        let (take, hold) = (st.take_start_ns, st.hold_start_ns);
        if take != 0 && take < t1 {
            // Two-trap design: a wait whose hold has begun ended at the hold's start.
            let end = if hold != 0 { hold } else { t1 };
            push(tid, SliceKind::Wait, take, end);
        }
        if hold != 0 && hold < t1 {
            push(tid, SliceKind::Hold, hold, t1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(tid: u32, wait: u64, acq: u64, rel: u64) -> GilSpan {
        GilSpan {
            wait_start_ns: wait,
            acquired_ns: acq,
            released_ns: rel,
            tid,
            flags: 0,
        }
    }

    fn total(s: &[Slice], kind: SliceKind) -> u64 {
        s.iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.end_ns - s.start_ns)
            .sum()
    }

    #[test]
    fn records_are_cut_to_the_window_and_open_spans_reach_its_end() {
        let spans = [
            // Ended before the window: out.
            span(1, 10, 20, 50),
            // Across t0 = 100: counted from t0.
            span(1, 90, 95, 130),
            // Inside, with an uncontended (empty) wait: the hold only.
            span(2, 140, 140, 160),
            // 3.6/3.7 and libc: the wait alone, then the hold alone.
            span(3, 150, 170, 0),
            span(3, 0, 170, 180),
            // Recorded after t1 = 200: out (the open state below covers it).
            span(2, 0, 190, 210),
        ];
        let open = [
            (
                2,
                ThreadGilState {
                    take_start_ns: 0,
                    hold_start_ns: 190,
                    tstate: 0,
                },
            ),
            (
                4,
                ThreadGilState {
                    take_start_ns: 185,
                    hold_start_ns: 195,
                    tstate: 0,
                },
            ),
        ];
        let s = slices(&spans, &open, 100, 200);
        // Holds: 100→130, 140→160, 170→180, 190→200 (open), 195→200 (open).
        assert_eq!(total(&s, SliceKind::Hold), 30 + 20 + 10 + 10 + 5);
        // Waits: 150→170, 185→195 (open, two-trap, hold begun).
        assert_eq!(total(&s, SliceKind::Wait), 20 + 10);
        assert!(s.iter().all(|s| s.start_ns >= 100 && s.end_ns <= 200));
        assert!(!s.iter().any(|s| s.tid == 2 && s.kind == SliceKind::Wait));
    }
}
