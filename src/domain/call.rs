//! Calls as the business sees them, whatever provider format they came in:
//! [`CallEvent`] is an agent-popup notification, [`CallLog`] the record of a call that
//! ended; both name the call's parties with a [`CallParty`].

use super::ids::{LeadId, OpportunityId, UserId};
use super::phone::{AgentNumber, PhoneNumber};
use super::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which way a call goes, seen from the business.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Who a call is between, as the provider named them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallParty {
    /// Which way the call goes.
    pub direction: Direction,
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

/// An agent-popup notification: a call ringing (or placed) now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEvent {
    /// Who the call is between.
    pub party: CallParty,
    /// The provider's id of the call.
    pub call_session_id: String,
}

impl std::ops::Deref for CallEvent {
    type Target = CallParty;
    fn deref(&self) -> &CallParty {
        &self.party
    }
}

/// How a call ended (SPEC 2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Talked.
    Answered,
    /// Not picked up.
    Missed,
    /// Went to voicemail.
    Voicemail,
    /// Line busy.
    Busy,
    /// Rejected.
    Declined,
    /// Hung up before an answer.
    Cancelled,
}

impl CallStatus {
    /// Reads a provider status, case-insensitive and trimmed (`No Answer`, `NotAnswered`
    /// and `Missed` are all missed; `Canceled` and `Cancelled` both cancelled).
    pub fn parse(raw: &str) -> Option<Self> {
        let key: String = raw
            .trim()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_lowercase();
        Some(match key.as_str() {
            "answered" => Self::Answered,
            "missed" | "notanswered" | "noanswer" => Self::Missed,
            "voicemail" => Self::Voicemail,
            "busy" => Self::Busy,
            "declined" => Self::Declined,
            "cancelled" | "canceled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Missed => "missed",
            Self::Voicemail => "voicemail",
            Self::Busy => "busy",
            Self::Declined => "declined",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The record of a call that ended (SPEC 2.2).
#[derive(Clone, Debug, PartialEq)]
pub struct CallLog {
    /// Who the call was between.
    pub party: CallParty,
    /// The provider's id of the call; without one the log is never deduplicated.
    pub call_session_id: Option<String>,
    /// Start.
    pub started_at: Timestamp,
    /// End (not before the start).
    pub ended_at: Timestamp,
    /// Talk time in seconds.
    pub duration_secs: i64,
    /// How it ended.
    pub status: CallStatus,
    /// The provider's notes.
    pub notes: Option<String>,
    /// Where the recording is.
    pub recording_url: Option<String>,
    /// Fields with no column of their own (caller details, unknown fields), by the
    /// name received.
    pub extras: serde_json::Map<String, serde_json::Value>,
}

impl std::ops::Deref for CallLog {
    type Target = CallParty;
    fn deref(&self) -> &CallParty {
        &self.party
    }
}

/// A call-route question (SPEC 2.3): who owns this caller?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRequest {
    /// The caller (E.164).
    pub caller: PhoneNumber,
    /// The virtual number called, when given (must be the connector's).
    pub virtual_number: Option<PhoneNumber>,
    /// Lead or opportunity routing, when given (else the connector's mode).
    pub mode: Option<super::connector::RouteMode>,
    /// Answer `text/plain` with the owner's number instead of JSON.
    pub text: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec_mapping() {
        let cases = [
            ("Answered", Some(CallStatus::Answered)),
            (" missed ", Some(CallStatus::Missed)),
            ("NotAnswered", Some(CallStatus::Missed)),
            ("No Answer", Some(CallStatus::Missed)),
            ("VOICEMAIL", Some(CallStatus::Voicemail)),
            ("Busy", Some(CallStatus::Busy)),
            ("declined", Some(CallStatus::Declined)),
            ("Canceled", Some(CallStatus::Cancelled)),
            ("Cancelled", Some(CallStatus::Cancelled)),
            ("Dropped", None),
            ("", None),
        ];
        for (raw, want) in cases {
            assert_eq!(CallStatus::parse(raw), want, "{raw}");
        }
    }
}
