//! Exact latency statistics: every sample is kept, sorted, and percentiles are read by
//! the nearest-rank method (the p-th percentile of n samples is the sample of rank
//! `ceil(p/100 * n)`, so the median of an even count is the lower middle sample).

use serde_json::{Value, json};
use std::time::Duration;

/// Summary of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min: f64,
    /// 50th percentile (nearest rank).
    pub median: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// 99.9th percentile (nearest rank).
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

/// The sample of nearest rank `ceil(p/100 * n)` in `sorted` (ascending, non-empty).
pub fn nearest_rank(sorted: &[Duration], p: f64) -> Duration {
    let n = sorted.len();
    if n == 0 {
        return Duration::ZERO;
    }
    // n is at most a few million, far below f64's exact integer range.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    // less a hair: 99.9 % of 2,000 is 1,998 exactly, not the 1,998.0000000000002 that
    // binary floating point makes of it
    let rank = ((p / 100.0) * n as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Milliseconds as `f64`.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Rounds to three decimals (for the JSON line).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Sorts `samples` and summarises them; `None` when there are none.
pub fn summarize(mut samples: Vec<Duration>) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    Some(Summary {
        count: samples.len(),
        min: ms(samples[0]),
        median: ms(nearest_rank(&samples, 50.0)),
        p90: ms(nearest_rank(&samples, 90.0)),
        p99: ms(nearest_rank(&samples, 99.0)),
        p999: ms(nearest_rank(&samples, 99.9)),
        max: ms(samples[samples.len() - 1]),
    })
}

impl Summary {
    /// `{"count","min","median","p90","p99","p999","max"}` in milliseconds, 3 decimals.
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "min": round3(self.min),
            "median": round3(self.median),
            "p90": round3(self.p90),
            "p99": round3(self.p99),
            "p999": round3(self.p999),
            "max": round3(self.max),
        })
    }
}

/// The header of a latency table whose rows [`row`] prints.
pub fn header() -> String {
    format!(
        "{:<20} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "min", "median", "p90", "p99", "max"
    )
}

/// One latency table row (`-` for an empty set).
pub fn row(label: &str, s: Option<Summary>) -> String {
    match s {
        Some(s) => format!(
            "{label:<20} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            s.count, s.min, s.median, s.p90, s.p99, s.max
        ),
        None => format!(
            "{label:<20} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            0, "-", "-", "-", "-", "-"
        ),
    }
}

/// The header of a latency table with a p99.9 column, whose rows [`tail_row`] prints.
pub fn tail_header() -> String {
    format!(
        "{:<24} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "min", "median", "p90", "p99", "p99.9", "max"
    )
}

/// One row of the table [`tail_header`] heads (`-` for an empty set).
pub fn tail_row(label: &str, s: Option<Summary>) -> String {
    match s {
        Some(s) => format!(
            "{label:<24} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            s.count, s.min, s.median, s.p90, s.p99, s.p999, s.max
        ),
        None => format!(
            "{label:<24} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            0, "-", "-", "-", "-", "-", "-"
        ),
    }
}

/// `Summary::to_json`, or `null` for an empty set.
pub fn json_or_null(s: Option<Summary>) -> Value {
    s.map_or(Value::Null, Summary::to_json)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn nearest_rank_reads_the_ceiling_rank() {
        let v: Vec<Duration> = (1..=100).map(d).collect();
        assert_eq!(nearest_rank(&v, 50.0), d(50));
        assert_eq!(nearest_rank(&v, 90.0), d(90));
        assert_eq!(nearest_rank(&v, 99.0), d(99));
        assert_eq!(nearest_rank(&v, 100.0), d(100));
        assert_eq!(nearest_rank(&v, 0.0), d(1));
        let small = vec![d(1), d(2), d(3), d(4)];
        assert_eq!(nearest_rank(&small, 50.0), d(2));
        assert_eq!(nearest_rank(&small, 99.0), d(4));
        assert_eq!(nearest_rank(&[d(7)], 99.0), d(7));
        let many: Vec<Duration> = (1..=2000).map(d).collect();
        assert_eq!(nearest_rank(&many, 99.9), d(1998));
        assert_eq!(nearest_rank(&v, 99.9), d(100));
    }

    #[test]
    fn summarize_sorts_first() {
        let s = summarize(vec![d(3), d(1), d(2)]).unwrap();
        assert_eq!(s.count, 3);
        assert!((s.min - 1.0).abs() < 1e-9);
        assert!((s.median - 2.0).abs() < 1e-9);
        assert!((s.max - 3.0).abs() < 1e-9);
        assert!(summarize(Vec::new()).is_none());
    }
}
