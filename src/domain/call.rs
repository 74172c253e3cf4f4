//! Calls as the business sees them, whatever provider format they came in:
//! [`CallEvent`] is an agent-popup notification.

use super::ids::{LeadId, OpportunityId, UserId};
use super::phone::{AgentNumber, PhoneNumber};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which way a call goes, seen from the business.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The customer called in.
    Inbound,
    /// The agent called out.
    Outbound,
}

impl Direction {
    /// Reads `Inbound`/`Outbound` case-insensitively (surrounding blanks ignored).
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            _ => None,
        }
    }

    /// The stored and JSON form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// What is wrong with one field of a provider request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldProblem {
    /// Absent or empty.
    Missing,
    /// Present but of the wrong type or value.
    Invalid,
}

/// A provider field that failed to parse, named as the spec spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Missing or invalid.
    pub problem: FieldProblem,
    /// The field's name in the provider's format (e.g. `SourceNumber`).
    pub field: String,
    /// A human explanation that never echoes the value.
    pub message: String,
}

impl FieldError {
    /// The field is absent or empty.
    pub fn missing(field: &str) -> Self {
        Self {
            problem: FieldProblem::Missing,
            field: field.to_owned(),
            message: format!("{field} is mandatory"),
        }
    }

    /// The field is present but wrong.
    pub fn invalid(field: &str, why: impl fmt::Display) -> Self {
        Self {
            problem: FieldProblem::Invalid,
            field: field.to_owned(),
            message: format!("{field}: {why}"),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldError {}

/// An agent-popup notification: a call ringing (or placed) now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEvent {
    /// Which way the call goes.
    pub direction: Direction,
    /// The provider's id of the call.
    pub call_session_id: String,
    /// The customer's number, when sent.
    pub lead_number: Option<PhoneNumber>,
    /// The agent's number or extension, when sent.
    pub agent_number: Option<AgentNumber>,
    /// The virtual number the call came through, when sent.
    pub display_number: Option<PhoneNumber>,
    /// The lead the provider already knows, when sent.
    pub lead_id: Option<LeadId>,
    /// The agent the provider already knows, when sent.
    pub user_id: Option<UserId>,
    /// The opportunity the call is about, when sent.
    pub opportunity_id: Option<OpportunityId>,
    /// A tag for a new lead's origin when the virtual number has none.
    pub tag: Option<String>,
    /// The source of a new lead.
    pub caller_source: Option<String>,
    /// The caller's name, used as a new lead's first name.
    pub caller_name: Option<String>,
    /// How the provider format names the lead-side number field (for errors).
    pub lead_number_field: &'static str,
    /// How the provider format names the agent-side number field (for errors).
    pub agent_number_field: &'static str,
}
