//! The LGTC generic format (SPEC 2.1): PascalCase fields into a [`CallEvent`].

use super::Fields;
use crate::domain::call::{CallEvent, CallLog, CallParty, CallStatus, Direction, FieldError};
use crate::domain::ids::{IdError, LeadId, OpportunityId, UserId};
use crate::domain::phone::{AgentNumber, Country, PhoneNumber};
use crate::domain::time::Timestamp;
use chrono_tz::Tz;
use serde_json::Value;

/// Every field name of the popup body, as the spec spells it.
pub const POPUP_FIELDS: &[&str] = &[
    "SourceNumber",
    "DestinationNumber",
    "DisplayNumber",
    "Direction",
    "CallSessionId",
    "LeadId",
    "UserId",
    "Tag",
    "OpportunityId",
    "CallerSource",
    "CallerName",
];

/// The spec spelling of a lowercased field name.
pub fn canonical(lower: &str) -> Option<&'static str> {
    POPUP_FIELDS
        .iter()
        .copied()
        .find(|f| f.eq_ignore_ascii_case(lower))
}

fn id<T>(
    f: &Fields,
    name: &str,
    parse: impl Fn(&str) -> Result<T, IdError>,
) -> Result<Option<T>, FieldError> {
    f.text(name)?
        .map(|s| parse(&s).map_err(|e| FieldError::invalid(name, e)))
        .transpose()
}

fn phone(f: &Fields, name: &str, country: Country) -> Result<Option<PhoneNumber>, FieldError> {
    f.text(name)?
        .map(|s| PhoneNumber::parse(&s, country).map_err(|e| FieldError::invalid(name, e)))
        .transpose()
}

/// Call-log fields with a column of their own; every other field goes to `data`.
const LOG_COLUMNS: &[&str] = &[
    "Direction",
    "CallSessionId",
    "SourceNumber",
    "DestinationNumber",
    "DisplayNumber",
    "LeadId",
    "UserId",
    "OpportunityId",
    "StartTime",
    "EndTime",
    "CallDuration",
    "Status",
    "CallNotes",
    "ResourceURL",
    "accessKey",
    "secretKey",
];

/// Every field name of the call-log body, as the spec spells it.
pub const LOG_FIELDS: &[&str] = &[
    "StartTime",
    "EndTime",
    "CallDuration",
    "Status",
    "CallNotes",
    "ResourceURL",
    "CallerCity",
    "CallerState",
    "CallerCountry",
    "CallerZipCode",
    "AgentName",
];

/// The spec spelling of a lowercased call-log field name.
pub fn canonical_log(lower: &str) -> Option<&'static str> {
    canonical(lower).or_else(|| {
        LOG_FIELDS
            .iter()
            .copied()
            .find(|f| f.eq_ignore_ascii_case(lower))
    })
}

/// Reads who a call is between. The lead-side number is mandatory unless `LeadId` is
/// given; the agent-side number too when `agent_required` (popups) unless `UserId` is.
///
/// # Errors
/// The first missing or invalid field.
pub fn parse_party(
    f: &Fields,
    country: Country,
    agent_required: bool,
) -> Result<CallParty, FieldError> {
    let direction_raw = f.required("Direction")?;
    let direction = Direction::parse(&direction_raw)
        .ok_or_else(|| FieldError::invalid("Direction", "must be Inbound or Outbound"))?;
    let lead_id = id(f, "LeadId", LeadId::parse)?;
    let user_id = id(f, "UserId", UserId::parse)?;
    let opportunity_id = id(f, "OpportunityId", OpportunityId::parse)?;
    let (lead_field, agent_field) = match direction {
        Direction::Inbound => ("SourceNumber", "DestinationNumber"),
        Direction::Outbound => ("DestinationNumber", "SourceNumber"),
    };
    let lead_number = phone(f, lead_field, country)?;
    if lead_number.is_none() && lead_id.is_none() {
        return Err(FieldError::missing(lead_field));
    }
    let agent_number = f
        .text(agent_field)?
        .map(|s| AgentNumber::parse(&s, country).map_err(|e| FieldError::invalid(agent_field, e)))
        .transpose()?;
    if agent_required && agent_number.is_none() && user_id.is_none() {
        return Err(FieldError::missing(agent_field));
    }
    Ok(CallParty {
        direction,
        lead_number,
        agent_number,
        display_number: phone(f, "DisplayNumber", country)?,
        lead_id,
        user_id,
        opportunity_id,
        tag: f.text("Tag")?,
        caller_source: f
            .text("CallerSource")?
            .map(|s| s.chars().take(50).collect()),
        caller_name: f.text("CallerName")?,
        lead_number_field: lead_field,
        agent_number_field: agent_field,
    })
}

/// Reads an agent-popup body.
///
/// # Errors
/// The first missing or invalid field, named as the spec spells it.
pub fn parse_popup(f: &Fields, country: Country) -> Result<CallEvent, FieldError> {
    f.required("Direction")?;
    let call_session_id = f.required("CallSessionId")?;
    let party = parse_party(f, country, true)?;
    Ok(CallEvent {
        party,
        call_session_id,
    })
}

/// Reads a call-log body (SPEC 2.2); times without an offset are read in `tz`.
///
/// # Errors
/// The first missing or invalid field, named as the spec spells it.
pub fn parse_call_log(f: &Fields, country: Country, tz: Tz) -> Result<CallLog, FieldError> {
    let party = parse_party(f, country, false)?;
    if party.display_number.is_none() {
        return Err(FieldError::missing("DisplayNumber"));
    }
    let time = |name: &str| -> Result<Timestamp, FieldError> {
        let raw = f.required(name)?;
        Timestamp::parse_provider(&raw, tz).map_err(|e| FieldError::invalid(name, e))
    };
    let started_at = time("StartTime")?;
    let ended_at = time("EndTime")?;
    let duration_secs =
        duration(f, "CallDuration")?.ok_or_else(|| FieldError::missing("CallDuration"))?;
    let status_raw = f.required("Status")?;
    let status = CallStatus::parse(&status_raw)
        .ok_or_else(|| FieldError::invalid("Status", "is not a known call status"))?;
    if ended_at < started_at {
        return Err(FieldError::invalid("EndTime", "is before StartTime"));
    }
    let extras = f
        .iter()
        .filter(|(name, _)| !LOG_COLUMNS.iter().any(|c| c.eq_ignore_ascii_case(name)))
        .map(|(name, v)| (name.to_owned(), v.clone()))
        .collect();
    Ok(CallLog {
        party,
        call_session_id: f.text("CallSessionId")?,
        started_at,
        ended_at,
        duration_secs,
        status,
        notes: f.text("CallNotes")?,
        recording_url: f.text("ResourceURL")?,
        extras,
    })
}

/// A non-negative whole number of seconds, as a JSON number or a string of digits.
///
/// # Errors
/// Anything else: `InvalidField`.
pub fn duration(f: &Fields, name: &str) -> Result<Option<i64>, FieldError> {
    let bad = || FieldError::invalid(name, "must be a non-negative whole number of seconds");
    match f.raw(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().filter(|n| *n >= 0).map(Some).ok_or_else(bad),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let t = s.trim();
            if t.bytes().all(|b| b.is_ascii_digit()) {
                t.parse().map(Some).map_err(|_| bad())
            } else {
                Err(bad())
            }
        }
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::call::FieldProblem;
    use serde_json::json;

    fn fields(v: serde_json::Value) -> Result<Fields, FieldError> {
        Fields::from_object(v.as_object().unwrap().clone(), canonical)
    }

    fn parse(v: serde_json::Value) -> Result<CallEvent, FieldError> {
        parse_popup(&fields(v)?, Country::parse("IN").unwrap())
    }

    #[test]
    fn an_inbound_popup_reads_the_source_as_the_lead_side() {
        let e = parse(
            json!({"sourcenumber": "08611795988", "DestinationNumber": "101",
            "direction": "INBOUND", "CallSessionId": 42}),
        )
        .unwrap();
        assert_eq!(e.lead_number.clone().unwrap().as_str(), "+918611795988");
        assert_eq!(
            e.agent_number.clone().unwrap(),
            AgentNumber::Extension("101".into())
        );
        assert_eq!(e.call_session_id, "42");
    }

    #[test]
    fn problems_name_the_field_as_the_spec_spells_it() {
        let base = json!({"SourceNumber": "8611795988", "DestinationNumber": "101",
            "Direction": "Inbound", "CallSessionId": "c1"});
        let cases = [
            ("Direction", json!(null), "Direction", FieldProblem::Missing),
            (
                "Direction",
                json!("Sideways"),
                "Direction",
                FieldProblem::Invalid,
            ),
            (
                "SourceNumber",
                json!(""),
                "SourceNumber",
                FieldProblem::Missing,
            ),
            (
                "SourceNumber",
                json!("12"),
                "SourceNumber",
                FieldProblem::Invalid,
            ),
            (
                "DestinationNumber",
                json!(true),
                "DestinationNumber",
                FieldProblem::Invalid,
            ),
            ("UserId", json!("nope"), "UserId", FieldProblem::Invalid),
        ];
        for (key, value, field, problem) in cases {
            let mut body = base.clone();
            body[key] = value;
            let err = parse(body).unwrap_err();
            assert_eq!((err.field.as_str(), err.problem), (field, problem), "{key}");
        }
        let dup = fields(json!({"Tag": "a", "TAG": "b"})).unwrap_err();
        assert_eq!(dup.field, "Tag");
    }
}
