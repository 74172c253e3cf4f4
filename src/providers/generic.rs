//! The LGTC generic format (SPEC 2.1): PascalCase fields into a [`CallEvent`].

use super::Fields;
use crate::domain::call::{CallEvent, Direction, FieldError};
use crate::domain::ids::{IdError, LeadId, OpportunityId, UserId};
use crate::domain::phone::{AgentNumber, Country, PhoneNumber};

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

/// Reads an agent-popup body.
///
/// # Errors
/// The first missing or invalid field, named as the spec spells it.
pub fn parse_popup(f: &Fields, country: Country) -> Result<CallEvent, FieldError> {
    let direction_raw = f.required("Direction")?;
    let direction = Direction::parse(&direction_raw)
        .ok_or_else(|| FieldError::invalid("Direction", "must be Inbound or Outbound"))?;
    let call_session_id = f.required("CallSessionId")?;
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
    if agent_number.is_none() && user_id.is_none() {
        return Err(FieldError::missing(agent_field));
    }
    Ok(CallEvent {
        direction,
        call_session_id,
        lead_number,
        agent_number,
        display_number: phone(f, "DisplayNumber", country)?,
        lead_id,
        user_id,
        opportunity_id,
        tag: f.text("Tag")?,
        caller_source: f.text("CallerSource")?,
        caller_name: f.text("CallerName")?,
        lead_number_field: lead_field,
        agent_number_field: agent_field,
    })
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
        assert_eq!(e.lead_number.unwrap().as_str(), "+918611795988");
        assert_eq!(
            e.agent_number.unwrap(),
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
