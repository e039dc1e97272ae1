//! Latency histograms shared by every client of a run: one relaxed atomic add per sample, so
//! thousands of clients record without a lock and without keeping a sample each.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets of 0.1 ms below 100 ms, of 1 ms up to 10 s, then of 100 ms up to 100 s; later
/// samples land in the last bucket.
const FINE: u64 = 1_000;
const MEDIUM: u64 = 9_900;
const COARSE: u64 = 900;
const BUCKETS: usize = (FINE + MEDIUM + COARSE + 1) as usize;

pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

fn bucket_of(us: u64) -> usize {
    let b = if us < 100_000 {
        us / 100
    } else if us < 10_000_000 {
        FINE + (us - 100_000) / 1_000
    } else {
        FINE + MEDIUM + ((us - 10_000_000) / 100_000).min(COARSE)
    };
    b as usize
}

/// The upper edge of a bucket, in milliseconds: a percentile is reported at its bucket's top
/// so it is never understated.
fn upper_ms(b: usize) -> f64 {
    let b = b as u64;
    let us = if b < FINE {
        (b + 1) * 100
    } else if b < FINE + MEDIUM {
        100_000 + (b - FINE + 1) * 1_000
    } else {
        10_000_000 + (b - FINE - MEDIUM + 1) * 100_000
    };
    us as f64 / 1000.0
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn record_us(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Empties it (between the probes of a search).
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }

    fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// The latency at or under which fraction `q` of the samples fall.
    fn quantile(counts: &[u64], total: u64, q: f64) -> f64 {
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_ms(b);
            }
        }
        upper_ms(counts.len() - 1)
    }

    pub fn summary(&self) -> Option<Latency> {
        let counts = self.counts();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let max = counts.iter().rposition(|&c| c > 0).map_or(0.0, upper_ms);
        Some(Latency {
            p50_ms: Self::quantile(&counts, total, 0.5),
            p99_ms: Self::quantile(&counts, total, 0.99),
            max_ms: max,
            samples: total,
        })
    }

    /// (latency ms, fraction of samples at or under it), 201 points.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let counts = self.counts();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Vec::new();
        }
        (0..=200)
            .map(|i| i as f64 / 200.0)
            .map(|q| (Self::quantile(&counts, total, q.max(1e-9)), q))
            .collect()
    }
}

/// The median, smallest and largest of some figures (three runs of a point).
pub fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Some((median, v[0], v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_tops() {
        let h = Histogram::new();
        for ms in 1..=100u64 {
            h.record_us(ms * 1000 - 50);
        }
        let l = h.summary().unwrap();
        assert_eq!(l.samples, 100);
        assert!((l.p50_ms - 50.0).abs() < 0.2, "{}", l.p50_ms);
        assert!((l.p99_ms - 99.0).abs() < 1.1, "{}", l.p99_ms);
        assert!((l.max_ms - 100.0).abs() < 1.1, "{}", l.max_ms);
        h.reset();
        assert!(h.summary().is_none());
    }

    #[test]
    fn spread_is_median_min_max() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(&[f64::NAN]), None);
    }
}
