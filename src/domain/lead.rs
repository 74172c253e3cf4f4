//! Leads: the people calls are about, and the names of their writable fields.

use super::ids::{LeadId, UserId};
use super::phone::PhoneNumber;
use super::time::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;

/// A lead as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Lead {
    /// Its id.
    pub id: LeadId,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Main phone number (E.164).
    pub phone: Option<PhoneNumber>,
    /// Mobile number (E.164).
    pub mobile: Option<PhoneNumber>,
    /// Any number of further numbers (E.164).
    pub secondary_numbers: Vec<PhoneNumber>,
    /// The user who owns the lead.
    pub owner_id: Option<UserId>,
    /// Where the lead came from.
    pub source: Option<String>,
    /// The origin (e.g. the tag of the virtual number that first saw it).
    pub origin: Option<String>,
    /// Sales stage.
    pub stage: Option<String>,
    /// Custom fields.
    pub fields: BTreeMap<String, String>,
    /// A unique id from another system.
    pub external_id: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its own fields last changed.
    pub updated_at: Timestamp,
}

impl Lead {
    /// Every number of the lead: phone, mobile, then the secondary numbers.
    pub fn numbers(&self) -> impl Iterator<Item = &PhoneNumber> {
        self.phone
            .iter()
            .chain(self.mobile.iter())
            .chain(self.secondary_numbers.iter())
    }

    /// The value of a field by name (see [`LeadField`]).
    pub fn get(&self, field: &LeadField) -> Option<String> {
        match field {
            LeadField::FirstName => self.first_name.clone(),
            LeadField::LastName => self.last_name.clone(),
            LeadField::Email => self.email.clone(),
            LeadField::Phone => self.phone.as_ref().map(|p| p.as_str().to_owned()),
            LeadField::Mobile => self.mobile.as_ref().map(|p| p.as_str().to_owned()),
            LeadField::Source => self.source.clone(),
            LeadField::Origin => self.origin.clone(),
            LeadField::Stage => self.stage.clone(),
            LeadField::Custom(k) => self.fields.get(k).cloned(),
        }
    }
}

/// A lead field named by its JSON name; any other name is a custom field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LeadField {
    /// `first_name`
    FirstName,
    /// `last_name`
    LastName,
    /// `email`
    Email,
    /// `phone`
    Phone,
    /// `mobile`
    Mobile,
    /// `source`
    Source,
    /// `origin`
    Origin,
    /// `stage`
    Stage,
    /// A key of the custom `fields`.
    Custom(String),
}

/// A field name that cannot be written by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this lead field cannot be written")]
pub struct ReadOnlyField;

impl LeadField {
    /// Reads a writable field name, matched exactly.
    ///
    /// # Errors
    /// [`ReadOnlyField`] for `id`, `owner_id`, the timestamps and empty names.
    pub fn parse(name: &str) -> Result<Self, ReadOnlyField> {
        Ok(match name {
            "first_name" => Self::FirstName,
            "last_name" => Self::LastName,
            "email" => Self::Email,
            "phone" => Self::Phone,
            "mobile" => Self::Mobile,
            "source" => Self::Source,
            "origin" => Self::Origin,
            "stage" => Self::Stage,
            "" | "id" | "owner_id" | "created_at" | "updated_at" => return Err(ReadOnlyField),
            other => Self::Custom(other.to_owned()),
        })
    }
}

/// Checks an email address: a non-empty local part and domain around exactly one `@`.
pub fn is_valid_email(raw: &str) -> bool {
    let mut parts = raw.split('@');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None)
            if !local.trim().is_empty() && !domain.trim().is_empty() && !raw.contains(char::is_whitespace)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_need_one_at_with_both_sides() {
        for ok in ["a@b", "first.last@example.com"] {
            assert!(is_valid_email(ok), "{ok}");
        }
        for bad in ["", "@b", "a@", "a@b@c", "ab", "a b@c"] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn lead_fields_are_matched_exactly_and_ids_are_read_only() {
        assert_eq!(LeadField::parse("stage"), Ok(LeadField::Stage));
        assert_eq!(
            LeadField::parse("Stage"),
            Ok(LeadField::Custom("Stage".into()))
        );
        assert_eq!(LeadField::parse("owner_id"), Err(ReadOnlyField));
        assert_eq!(LeadField::parse("id"), Err(ReadOnlyField));
    }
}

/// An opportunity's status.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OpportunityStatus {
    /// Being worked on.
    #[default]
    Open,
    /// Closed, won.
    Won,
    /// Closed, lost.
    Lost,
}

impl OpportunityStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Won => "won",
            Self::Lost => "lost",
        }
    }

    /// Reads the stored form.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "open" => Some(Self::Open),
            "won" => Some(Self::Won),
            "lost" => Some(Self::Lost),
            _ => None,
        }
    }
}

/// An opportunity on a lead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Opportunity {
    /// Its id.
    pub id: super::ids::OpportunityId,
    /// The lead.
    pub lead_id: LeadId,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner_id: Option<UserId>,
    /// Open, won or lost.
    pub status: OpportunityStatus,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// What kind of thing happened to a lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// A logged inbound call.
    InboundCall,
    /// A logged outbound call.
    OutboundCall,
    /// An agent's disposition.
    Disposition,
    /// A task follow-up.
    Task,
    /// A custom activity follow-up.
    Custom,
}

impl ActivityKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InboundCall => "inbound_call",
            Self::OutboundCall => "outbound_call",
            Self::Disposition => "disposition",
            Self::Task => "task",
            Self::Custom => "custom",
        }
    }

    /// Reads the stored form.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "inbound_call" => Self::InboundCall,
            "outbound_call" => Self::OutboundCall,
            "disposition" => Self::Disposition,
            "task" => Self::Task,
            "custom" => Self::Custom,
            _ => return None,
        })
    }
}

/// Something that happened to a lead.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Activity {
    /// Its id.
    pub id: super::ids::ActivityId,
    /// Its kind.
    pub kind: ActivityKind,
    /// The lead.
    pub lead_id: LeadId,
    /// The opportunity, if any.
    pub opportunity_id: Option<super::ids::OpportunityId>,
    /// The user, if known.
    pub user_id: Option<UserId>,
    /// The connector, if any.
    pub connector_id: Option<super::ids::ConnectorId>,
    /// The provider's call id, if any.
    pub call_session_id: Option<String>,
    /// Call status or disposition value.
    pub status: Option<String>,
    /// Call start.
    pub started_at: Option<Timestamp>,
    /// Call end.
    pub ended_at: Option<Timestamp>,
    /// Call duration.
    pub duration_secs: Option<i64>,
    /// Recording.
    pub recording_url: Option<String>,
    /// Notes.
    pub notes: Option<String>,
    /// Everything else.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// When it was recorded.
    pub created_at: Timestamp,
}
