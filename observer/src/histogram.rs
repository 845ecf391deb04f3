//! Latency distributions read from the kernel: summaries, percentiles, interval deltas.
use observer_common::{HIST_BUCKETS, Histogram, bucket_lower, bucket_upper};
use serde::Serialize;

/// A distribution in nanoseconds. Count, total and max are exact; percentiles are interpolated
/// inside a log-linear bucket, so they are within 1/8 of a power of two of the true value.
#[derive(Clone)]
pub struct Distribution {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub buckets: Box<[u64; HIST_BUCKETS]>,
}

/// What the report shows for a distribution (all in nanoseconds).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub total: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Default for Distribution {
    fn default() -> Self {
        Self {
            count: 0,
            total_ns: 0,
            max_ns: 0,
            buckets: Box::new([0; HIST_BUCKETS]),
        }
    }
}

impl From<&Histogram> for Distribution {
    fn from(h: &Histogram) -> Self {
        Self {
            count: h.count,
            total_ns: h.total_ns,
            max_ns: h.max_ns,
            buckets: Box::new(h.buckets),
        }
    }
}

impl Distribution {
    /// A distribution of the given spans, bucketed as the kernel buckets them (tests build
    /// reports from these).
    #[cfg(test)]
    pub fn of_values(values: &[u64]) -> Self {
        let mut d = Distribution::default();
        for &v in values {
            d.count += 1;
            d.total_ns += v;
            d.max_ns = d.max_ns.max(v);
            d.buckets[observer_common::bucket_index(v)] += 1;
        }
        d
    }

    /// Adds another distribution's spans (a lock's numbers over all its threads).
    pub fn add(&mut self, other: &Distribution) {
        self.count += other.count;
        self.total_ns += other.total_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
        for (b, o) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *b += o;
        }
    }

    /// What happened since `earlier` (a previous reading of the same kernel entry). Max is not
    /// subtractable; the interval's max is bounded by the highest non-empty bucket instead.
    pub fn since(&self, earlier: &Distribution) -> Distribution {
        let mut d = Distribution {
            count: self.count.saturating_sub(earlier.count),
            total_ns: self.total_ns.saturating_sub(earlier.total_ns),
            max_ns: 0,
            buckets: Box::new([0; HIST_BUCKETS]),
        };
        for (i, b) in d.buckets.iter_mut().enumerate() {
            *b = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        d.max_ns = match d.buckets.iter().rposition(|&c| c > 0) {
            Some(i) => (bucket_upper(i) - 1).min(self.max_ns),
            None => 0,
        };
        d
    }

    /// The value below which a fraction `q` of the samples fall.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = (q * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &c) in self.buckets.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if (seen + c) as f64 >= rank {
                let lo = bucket_lower(i) as f64;
                let hi = bucket_upper(i)
                    .min(self.max_ns.saturating_add(1))
                    .max(bucket_lower(i) + 1) as f64;
                let within = (rank - seen as f64) / c as f64;
                return (lo + (hi - lo) * within) as u64;
            }
            seen += c;
        }
        self.max_ns
    }

    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            total: self.total_ns,
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            max: self.max_ns,
        }
    }

    /// Non-empty buckets as (exclusive upper bound in ns, count): the JSON `*_hist` arrays.
    pub fn nonzero_buckets(&self) -> Vec<(u64, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &c)| (bucket_upper(i), c))
            .collect()
    }

    /// Adds a time span that has started but not ended (a hold in progress): it counts toward the
    /// total, not toward the distribution of completed spans.
    pub fn add_open_span(&mut self, ns: u64) {
        self.total_ns += ns;
    }
}

#[cfg(test)]
mod tests {
    use observer_common::bucket_index;

    use super::*;

    #[test]
    fn adding_adds_counts_and_keeps_the_max() {
        let mut a = Distribution::default();
        let mut b = Distribution::default();
        for (d, v) in [(&mut a, 1000u64), (&mut b, 2_000_000)] {
            d.count = 1;
            d.total_ns = v;
            d.max_ns = v;
            d.buckets[bucket_index(v)] = 1;
        }
        a.add(&b);
        assert_eq!(a.count, 2);
        assert_eq!(a.total_ns, 2_001_000);
        assert_eq!(a.max_ns, 2_000_000);
        assert_eq!(a.buckets.iter().sum::<u64>(), 2);
    }

    #[test]
    fn percentiles_are_within_a_bucket() {
        // 1000 samples, 1 ms .. 10 ms evenly.
        let values: Vec<u64> = (1..=1000).map(|i| i * 10_000).collect();
        let d = Distribution::of_values(&values);
        let s = d.summary();
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() / want as f64 <= 0.125;
        assert!(close(s.p50, 5_000_000), "p50 {}", s.p50);
        assert!(close(s.p90, 9_000_000), "p90 {}", s.p90);
        assert!(close(s.p99, 9_900_000), "p99 {}", s.p99);
        assert_eq!(s.max, 10_000_000);
        assert_eq!(s.count, 1000);
    }

    #[test]
    fn constant_values_give_that_value() {
        let d = Distribution::of_values(&[5_000_000; 100]);
        let s = d.summary();
        assert!(
            s.p50 >= bucket_lower(bucket_index(5_000_000)) && s.p50 <= 5_000_000,
            "{}",
            s.p50
        );
        assert_eq!(s.max, 5_000_000);
    }

    #[test]
    fn empty_is_all_zero() {
        assert_eq!(Distribution::default().summary(), Summary::default());
    }

    #[test]
    fn delta_subtracts() {
        let a = Distribution::of_values(&[1000, 2000]);
        let b = Distribution::of_values(&[1000, 2000, 4_000_000]);
        let d = b.since(&a);
        assert_eq!(d.count, 1);
        assert_eq!(d.total_ns, 4_000_000);
        assert_eq!(d.max_ns, 4_000_000);
        assert_eq!(d.nonzero_buckets().len(), 1);
    }
}
