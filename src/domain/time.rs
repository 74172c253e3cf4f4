//! Timestamps: stored as milliseconds since the Unix epoch, shown as RFC 3339 UTC with `Z`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An instant with millisecond precision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Timestamp(i64);

/// A text that is not an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 time with an offset")]
pub struct TimeError;

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    /// From milliseconds since the epoch (as stored).
    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant shifted by `secs` seconds (negative goes back).
    pub fn plus_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// Reads an RFC 3339 time (any offset).
    ///
    /// # Errors
    /// [`TimeError`] when `raw` is not RFC 3339.
    pub fn parse_rfc3339(raw: &str) -> Result<Self, TimeError> {
        DateTime::parse_from_rfc3339(raw.trim())
            .map(|t| Self(t.timestamp_millis()))
            .map_err(|_| TimeError)
    }

    /// RFC 3339 in UTC with `Z` and milliseconds.
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse_rfc3339(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_show_as_utc_with_z() {
        let t = Timestamp::parse_rfc3339("2017-07-08T00:26:38+05:30").unwrap();
        assert_eq!(t.to_rfc3339(), "2017-07-07T18:56:38.000Z");
        assert!(Timestamp::parse_rfc3339("2017-07-07 18:26").is_err());
    }
}
