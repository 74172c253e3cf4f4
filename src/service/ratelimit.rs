//! Per-connector token buckets for provider requests (SPEC 2 and 8:
//! `limits.provider_rate_per_sec` with `limits.provider_burst`, per node).

use crate::domain::ids::ConnectorId;
use dashmap::DashMap;
use std::time::Instant;

/// One connector's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by connector.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<ConnectorId, Bucket>,
}

impl RateLimiter {
    /// `rate` requests per second with bursts of up to `burst`.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: DashMap::new(),
        }
    }

    /// Takes one token for `connector`; when none is left, returns the whole seconds
    /// to wait before retrying (for `Retry-After`).
    ///
    /// # Errors
    /// The seconds to wait when the connector is over its rate.
    pub fn check(&self, connector: ConnectorId) -> Result<(), u64> {
        self.check_at(connector, Instant::now())
    }

    fn check_at(&self, connector: ConnectorId, now: Instant) -> Result<(), u64> {
        let mut b = self.buckets.entry(connector).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.rate;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_refills_tokens() {
        let l = RateLimiter::new(2, 3);
        let c = ConnectorId::new();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at(c, t0), Ok(()));
        }
        assert_eq!(l.check_at(c, t0), Err(1));
        assert_eq!(
            l.check_at(ConnectorId::new(), t0),
            Ok(()),
            "buckets are per connector"
        );
        assert_eq!(l.check_at(c, t0 + Duration::from_millis(500)), Ok(()));
        assert!(l.check_at(c, t0 + Duration::from_millis(500)).is_err());
    }
}
