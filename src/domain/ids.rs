//! Typed identifiers. Every id is a UUID shown as a lowercase hyphenated string; the
//! newtypes keep a `LeadId` from being passed where a `UserId` is expected.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use uuid::Uuid;

/// An id string that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id (expected a UUID)")]
pub struct IdError;

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// A fresh id that sorts after every id made before it (UUID v7), for rows
            /// listed in creation order.
            pub fn time_ordered() -> Self {
                Self(Uuid::now_v7())
            }

            /// Reads an id from its text form.
            ///
            /// # Errors
            /// [`IdError`] when `raw` is not a UUID.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                Uuid::parse_str(raw.trim()).map(Self).map_err(|_| IdError)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0.hyphenated())
            }
        }

        super::string_schema!(
            $name,
            Some(utoipa::openapi::schema::SchemaFormat::Custom("uuid".into())),
            "a lowercase hyphenated UUID"
        );

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

id_type! {
    /// A lead (a person a call is about).
    LeadId,
    /// A user (agent).
    UserId,
    /// A team of users.
    TeamId,
    /// A connector (one provider instance).
    ConnectorId,
    /// An opportunity on a lead.
    OpportunityId,
    /// One popup of one call to one agent.
    PopupId,
    /// An activity on a lead.
    ActivityId,
    /// A virtual (DID) number owned by a connector.
    VirtualNumberId,
    /// A telephony-log row.
    TelephonyLogId,
    /// An outbox item (also its `Idempotency-Key`).
    OutboxId,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_as_lowercase_hyphenated_strings() {
        let id = LeadId::parse("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        assert_eq!(id.to_string(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<LeadId>(&json).unwrap(), id);
        assert_eq!(LeadId::parse("nope"), Err(IdError));
    }
}
