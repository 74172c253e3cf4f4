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

/// Why a provider time was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProviderTimeError {
    /// Not `YYYY-MM-DD HH:MM:SS[.fraction]` with an optional offset.
    #[error("must be YYYY-MM-DD HH:MM:SS in the connector's time zone, or with an offset")]
    Format,
    /// A local time that does not exist (a DST gap).
    #[error("this local time does not exist in the connector's time zone")]
    Gap,
}

impl Timestamp {
    /// Reads a provider time (SPEC 2.2): `YYYY-MM-DD HH:MM:SS[.fraction]` in `tz`, or the
    /// same with `T` or a space followed by an offset (`Z`, `+05:30`). An ambiguous local
    /// time takes the earlier instant.
    ///
    /// # Errors
    /// [`ProviderTimeError`].
    pub fn parse_provider(raw: &str, tz: chrono_tz::Tz) -> Result<Self, ProviderTimeError> {
        use chrono::{LocalResult, NaiveDateTime, TimeZone};
        let raw = raw.trim();
        if raw.len() < 19 || !raw.is_char_boundary(10) || !raw.is_char_boundary(11) {
            return Err(ProviderTimeError::Format);
        }
        let (date, rest) = raw.split_at(10);
        let rest = rest
            .strip_prefix(['T', ' '])
            .ok_or(ProviderTimeError::Format)?;
        let clock_end = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
        let (clock, offset) = rest.split_at(clock_end);
        let naive =
            NaiveDateTime::parse_from_str(&format!("{date}T{clock}"), "%Y-%m-%dT%H:%M:%S%.f")
                .map_err(|_| ProviderTimeError::Format)?;
        if offset.is_empty() {
            return match tz.from_local_datetime(&naive) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    Ok(Self(t.timestamp_millis()))
                }
                LocalResult::None => Err(ProviderTimeError::Gap),
            };
        }
        let offset = if offset.eq_ignore_ascii_case("z") {
            "+00:00"
        } else {
            offset
        };
        DateTime::parse_from_rfc3339(&format!("{date}T{clock}{offset}"))
            .map(|t| Self(t.timestamp_millis()))
            .map_err(|_| ProviderTimeError::Format)
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
    fn provider_times_read_in_the_connector_zone_or_with_their_offset() {
        let kolkata: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
        let new_york: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let ok = [
            ("2017-07-08 00:26:38", kolkata, "2017-07-07T18:56:38.000Z"),
            ("2017-07-08T00:26:38.5", kolkata, "2017-07-07T18:56:38.500Z"),
            (
                "2016-09-27 03:49:44.391601+00:00",
                kolkata,
                "2016-09-27T03:49:44.391Z",
            ),
            ("2017-07-07T18:26:38Z", new_york, "2017-07-07T18:26:38.000Z"),
            (
                "2017-07-08 00:26:38+05:30",
                new_york,
                "2017-07-07T18:56:38.000Z",
            ),
            // ambiguous (clocks go back): the earlier instant
            ("2024-11-03 01:30:00", new_york, "2024-11-03T05:30:00.000Z"),
        ];
        for (raw, tz, want) in ok {
            assert_eq!(
                Timestamp::parse_provider(raw, tz).unwrap().to_rfc3339(),
                want,
                "{raw}"
            );
        }
        assert_eq!(
            Timestamp::parse_provider("2024-03-10 02:30:00", new_york),
            Err(ProviderTimeError::Gap)
        );
        for bad in [
            "",
            "yesterday",
            "2017-07-08",
            "2017-13-08 00:26:38",
            "2017-07-08 00:26",
            "2017-07-08 00:26:38+5",
        ] {
            assert_eq!(
                Timestamp::parse_provider(bad, kolkata),
                Err(ProviderTimeError::Format),
                "{bad}"
            );
        }
    }

    #[test]
    fn timestamps_show_as_utc_with_z() {
        let t = Timestamp::parse_rfc3339("2017-07-08T00:26:38+05:30").unwrap();
        assert_eq!(t.to_rfc3339(), "2017-07-07T18:56:38.000Z");
        assert!(Timestamp::parse_rfc3339("2017-07-07 18:26").is_err());
    }
}

super::string_schema!(
    Timestamp,
    Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
        utoipa::openapi::schema::KnownFormat::DateTime
    )),
    "RFC 3339 in UTC with Z"
);
