//! Knowlarity Super Receptionist V2 (SPEC 2.5): its field names are translated into
//! the generic ones, then read by [`super::generic`]; errors are named back in SR terms
//! (`caller_id`, …) when the value came from an SR field. Generic names win when both
//! name the same thing.

use super::Fields;
use super::generic;
use crate::domain::call::{CallEvent, CallLog, FieldError};
use crate::domain::phone::{AgentNumber, Country};
use crate::domain::time::Timestamp;
use chrono_tz::Tz;
use serde_json::Value;

/// SR field names, as Knowlarity spells them.
pub const SR_FIELDS: &[&str] = &[
    "caller_id",
    "agent_number",
    "destination",
    "dispnumber",
    "callid",
    "call_type",
    "start_time",
    "end_time",
    "call_duration",
    "resource_url",
];

/// The spelling of a lowercased field name (SR or generic).
pub fn canonical(lower: &str) -> Option<&'static str> {
    SR_FIELDS
        .iter()
        .copied()
        .find(|f| *f == lower)
        .or_else(|| generic::canonical_log(lower))
}

/// Which generic field took its value from which SR field.
type Renames = Vec<(&'static str, &'static str)>;

fn rename(e: FieldError, renames: &Renames) -> FieldError {
    match renames.iter().find(|(generic, _)| *generic == e.field) {
        Some((generic, sr)) => FieldError {
            message: e.message.replacen(generic, sr, 1),
            field: (*sr).to_owned(),
            ..e
        },
        None => e,
    }
}

/// Moves `sr` into `generic` unless a generic value was sent.
fn take(f: &mut Fields, renames: &mut Renames, sr: &'static str, generic: &'static str) {
    if f.has(generic) {
        f.remove(sr);
        return;
    }
    renames.push((generic, sr));
    if let Some(v) = f.remove(sr) {
        f.insert(generic, v);
    }
}

/// Translates SR fields into generic ones; `for_log` adds the call-log rules (a missing
/// `end_time` is `start_time` + `call_duration`; `Status` from the duration).
fn translate(
    mut f: Fields,
    country: Country,
    tz: Tz,
    for_log: bool,
) -> Result<(Fields, Renames), FieldError> {
    let mut renames = Renames::new();
    if !f.has("Direction") {
        renames.push(("Direction", "call_type"));
        let direction = match f.text("call_type")? {
            None => return Err(FieldError::missing("call_type")),
            Some(t) if t.eq_ignore_ascii_case("incoming") => "Inbound",
            Some(t) if t.eq_ignore_ascii_case("outgoing") => "Outbound",
            Some(_) => {
                return Err(FieldError::invalid(
                    "call_type",
                    "must be incoming or outgoing",
                ));
            }
        };
        f.insert("Direction", Value::from(direction));
    }
    f.remove("call_type");
    let inbound = f
        .text("Direction")?
        .is_some_and(|d| d.eq_ignore_ascii_case("inbound"));
    let (lead_side, agent_side) = if inbound {
        ("SourceNumber", "DestinationNumber")
    } else {
        ("DestinationNumber", "SourceNumber")
    };
    take(&mut f, &mut renames, "caller_id", lead_side);
    if f.has("agent_number") {
        take(&mut f, &mut renames, "agent_number", agent_side);
        f.remove("destination");
    } else if f
        .text("destination")?
        .is_some_and(|d| AgentNumber::parse(&d, country).is_ok())
    {
        take(&mut f, &mut renames, "destination", agent_side);
    }
    take(&mut f, &mut renames, "dispnumber", "DisplayNumber");
    take(&mut f, &mut renames, "callid", "CallSessionId");
    if for_log {
        let duration = generic::duration(&f, "call_duration")?;
        take(&mut f, &mut renames, "call_duration", "CallDuration");
        take(&mut f, &mut renames, "start_time", "StartTime");
        if !f.has("EndTime") && !f.has("end_time") {
            // a missing end_time is start_time + call_duration
            if let (Some(start), Some(secs)) = (f.text("StartTime")?, duration)
                && let Ok(t) = Timestamp::parse_provider(&start, tz)
            {
                f.insert("EndTime", Value::from(t.plus_secs(secs).to_rfc3339()));
            }
        }
        take(&mut f, &mut renames, "end_time", "EndTime");
        take(&mut f, &mut renames, "resource_url", "ResourceURL");
        if !f.has("Status") {
            let answered = generic::duration(&f, "CallDuration")
                .ok()
                .flatten()
                .is_some_and(|d| d > 0);
            f.insert(
                "Status",
                Value::from(if answered { "Answered" } else { "Missed" }),
            );
        }
    }
    Ok((f, renames))
}

/// Reads an SR V2 agent-popup body.
///
/// # Errors
/// The first missing or invalid field, named as SR spells it when it came from SR.
pub fn parse_popup(f: Fields, country: Country, tz: Tz) -> Result<CallEvent, FieldError> {
    let (f, renames) = translate(f, country, tz, false)?;
    generic::parse_popup(&f, country).map_err(|e| rename(e, &renames))
}

/// Reads an SR V2 call-log body.
///
/// # Errors
/// The first missing or invalid field, named as SR spells it when it came from SR.
pub fn parse_call_log(f: Fields, country: Country, tz: Tz) -> Result<CallLog, FieldError> {
    let (f, renames) = translate(f, country, tz, true)?;
    generic::parse_call_log(&f, country, tz).map_err(|e| rename(e, &renames))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::call::{CallStatus, Direction};
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        Fields::from_object(v.as_object().unwrap().clone(), canonical).unwrap()
    }

    fn country() -> Country {
        Country::parse("IN").unwrap()
    }

    #[test]
    fn an_sr_log_reads_like_the_generic_one() {
        let sr = fields(
            json!({"caller_id": "+918611795988", "agent_number": "101", "dispnumber": "+918069000000",
            "callid": "k-1", "call_type": "Incoming", "start_time": "2016-09-27 03:49:44.391601+00:00",
            "call_duration": "30", "resource_url": "https://rec/1.mp3", "hangup_cause": "900"}),
        );
        let log = parse_call_log(sr, country(), chrono_tz::UTC).unwrap();
        assert_eq!(log.direction, Direction::Inbound);
        assert_eq!(log.lead_number.as_ref().unwrap().as_str(), "+918611795988");
        assert_eq!(log.call_session_id.as_deref(), Some("k-1"));
        assert_eq!(log.status, CallStatus::Answered);
        assert_eq!(log.ended_at.millis() - log.started_at.millis(), 30_000);
        assert_eq!(log.extras.get("hangup_cause"), Some(&json!("900")));
        assert!(log.extras.get("caller_id").is_none());
    }

    #[test]
    fn sr_problems_are_named_in_sr_terms() {
        let missing = parse_call_log(
            fields(json!({"call_type": "incoming"})),
            country(),
            chrono_tz::UTC,
        )
        .unwrap_err();
        assert_eq!(missing.field, "caller_id");
        let bad = parse_popup(
            fields(json!({"call_type": "sideways", "caller_id": "1"})),
            country(),
            chrono_tz::UTC,
        )
        .unwrap_err();
        assert_eq!(bad.field, "call_type");
        let number = parse_popup(
            fields(json!({"call_type": "incoming", "caller_id": "12", "agent_number": "101", "callid": "x"})),
            country(),
            chrono_tz::UTC,
        )
        .unwrap_err();
        assert_eq!(number.field, "caller_id");
        let missed = parse_call_log(
            fields(json!({"call_type": "outgoing", "caller_id": "8611795988", "dispnumber": "8069000000",
                "start_time": "2016-09-27 03:49:44+05:30", "call_duration": "0"})),
            country(),
            chrono_tz::UTC,
        )
        .unwrap();
        assert_eq!(missed.status, CallStatus::Missed);
    }
}
