//! Click-to-call (SPEC 5): an agent asks to call a lead; the gateway picks the
//! connector and virtual number by the team rules, fills the connector's templates and
//! calls the provider. Checks run in this order: validation (422/403), then the rate
//! rule (the same agent and lead within 3 s: 429, held in the store), then the call.

use crate::domain::connector::{BodyFormat, ClickToCallSettings, Connector, HttpMethod};
use crate::domain::ids::{ConnectorId, LeadId, OpportunityId, TeamId, TelephonyLogId};
use crate::domain::lead::{Lead, LeadField};
use crate::domain::phone::{AgentNumber, PhoneNumber};
use crate::domain::template::{Escape, Placeholder, Template};
use crate::domain::time::Timestamp;
use crate::domain::user::User;
use crate::outbound::client::{self, ProviderCall};
use crate::state::AppState;
use crate::store::{ClickToCallRecord, StoreError, TelephonyLogRow, VirtualNumber};
use serde_json::json;
use std::time::{Duration, Instant};

/// Seconds within which a second request for the same agent and lead is refused.
pub const RATE_WINDOW_SECS: i64 = 3;

/// What the agent asks for.
#[derive(Debug, Clone)]
pub struct ClickToCallInput {
    /// The lead to call.
    pub lead_id: LeadId,
    /// The virtual number to call from, when chosen.
    pub virtual_number: Option<String>,
    /// The opportunity the call is about.
    pub opportunity_id: Option<OpportunityId>,
    /// Which of the lead's numbers, when chosen.
    pub number: Option<String>,
}

/// A placed call.
#[derive(Debug, Clone)]
pub struct ClickToCallOk {
    /// The connector used.
    pub connector_id: ConnectorId,
    /// The virtual number used (E.164).
    pub virtual_number: Option<String>,
    /// The provider's status.
    pub provider_status: u16,
    /// The provider's body (first 4 KiB).
    pub provider_body: String,
}

/// Why a click-to-call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClickToCallError {
    /// A field is wrong (422) or names nothing (404 for the lead).
    #[error("{message}")]
    Invalid {
        /// snake_case field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The lead does not exist.
    #[error("lead not found")]
    LeadNotFound,
    /// The virtual number is not one the agent sees.
    #[error("this virtual number is not visible to the agent")]
    NotVisible,
    /// The connector has no click-to-call settings.
    #[error("click-to-call is not configured for this connector")]
    NotConfigured,
    /// The same agent asked for the same lead moments ago.
    #[error("a call to this lead was requested moments ago")]
    RateLimited(u64),
    /// The provider failed, timed out, or answered without the keyword.
    #[error("{message}")]
    ProviderFailed {
        /// Why.
        message: String,
        /// Its status, if it answered.
        provider_status: Option<u16>,
        /// Its body (first 4 KiB).
        provider_body: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> ClickToCallError {
    ClickToCallError::Invalid {
        field,
        message: message.into(),
    }
}

/// The connector and virtual number a call goes through (SPEC 5 team rules).
async fn choose(
    state: &AppState,
    agent: &User,
    chosen: Option<&str>,
) -> Result<(Connector, Option<VirtualNumber>), ClickToCallError> {
    let visible = state.store.visible_connectors(agent.id).await?;
    if let Some(raw) = chosen {
        let number = PhoneNumber::parse(raw, crate::service::directory::default_country(state))
            .map_err(|e| invalid("virtual_number", e.to_string()))?;
        let vn = state
            .store
            .virtual_number(&number)
            .await?
            .ok_or(ClickToCallError::NotVisible)?;
        let connector = visible
            .into_iter()
            .find(|c| c.id == vn.connector_id)
            .ok_or(ClickToCallError::NotVisible)?;
        return Ok((connector, Some(vn)));
    }
    // oldest visible connector first, and within it its oldest number
    let mut first = None;
    for c in visible {
        let numbers = state.store.list_virtual_numbers(c.id).await?;
        if let Some(vn) = numbers.into_iter().next() {
            return Ok((c, Some(vn)));
        }
        if first.is_none() {
            first = Some(c);
        }
    }
    first
        .map(|c| (c, None))
        .ok_or(ClickToCallError::NotConfigured)
}

/// The lead number to call: the one asked for (it must be the lead's), else phone, else
/// mobile, else the first secondary number.
fn number_to_call(
    lead: &Lead,
    asked: Option<&str>,
    connector: &Connector,
) -> Result<PhoneNumber, ClickToCallError> {
    match asked {
        Some(raw) => {
            let n = PhoneNumber::parse(raw, connector.settings.default_country)
                .map_err(|e| invalid("number", e.to_string()))?;
            if lead.numbers().any(|m| *m == n) {
                Ok(n)
            } else {
                Err(invalid(
                    "number",
                    "number must be one of the lead's numbers",
                ))
            }
        }
        None => lead
            .numbers()
            .next()
            .cloned()
            .ok_or_else(|| invalid("number", "the lead has no number to call")),
    }
}

/// Values of the SPEC 5 placeholders for one call.
pub struct CallValues<'a> {
    /// The lead.
    pub lead: &'a Lead,
    /// The agent.
    pub agent: &'a User,
    /// The number called.
    pub number: &'a PhoneNumber,
    /// The virtual number.
    pub virtual_number: Option<&'a PhoneNumber>,
    /// The opportunity.
    pub opportunity_id: Option<OpportunityId>,
    /// The connector's teams (for `@{User:TeamId,}`).
    pub connector_teams: &'a [TeamId],
}

impl CallValues<'_> {
    /// The value of one placeholder (extra names give the empty string here).
    pub fn value(&self, p: &Placeholder) -> String {
        match p {
            Placeholder::Lead { field, default } => LeadField::parse(field)
                .ok()
                .and_then(|f| self.lead.get(&f))
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.clone()),
            Placeholder::UserTeamId { default } => self
                .agent
                .team_ids
                .iter()
                .find(|t| self.connector_teams.contains(t))
                .map_or_else(|| default.clone(), ToString::to_string),
            Placeholder::UserGroupIds { default } => {
                if self.agent.group_ids.is_empty() {
                    default.clone()
                } else {
                    self.agent.group_ids.join(",")
                }
            }
            Placeholder::Named("virtualNumber") => self
                .virtual_number
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
            Placeholder::Named("leadId") => self.lead.id.to_string(),
            Placeholder::Named("customerNumber") => self.number.national_significant(),
            Placeholder::Named("PhoneNumberWithCountryCode") => self.number.as_str().to_owned(),
            Placeholder::Named("agentNumber") => self
                .agent
                .phone_numbers
                .first()
                .map(AgentNumber::as_str)
                .unwrap_or_default()
                .to_owned(),
            Placeholder::Named("agentName") => self.agent.name.clone(),
            Placeholder::Named("agentEmail") => self.agent.email.clone(),
            Placeholder::Named("opportunityId") => self
                .opportunity_id
                .map(|o| o.to_string())
                .unwrap_or_default(),
            Placeholder::Named(_) => String::new(),
        }
    }
}

/// The request templates of a connector setting (click-to-call or forwarding).
pub struct RequestTemplate<'a> {
    /// URL template.
    pub url: &'a str,
    /// GET or POST.
    pub method: HttpMethod,
    /// Header templates.
    pub headers: &'a std::collections::BTreeMap<String, String>,
    /// Body template.
    pub body: Option<&'a str>,
    /// Body encoding.
    pub body_format: BodyFormat,
    /// Timeout.
    pub timeout_ms: u64,
}

impl<'a> From<&'a ClickToCallSettings> for RequestTemplate<'a> {
    fn from(s: &'a ClickToCallSettings) -> Self {
        Self {
            url: &s.url,
            method: s.method,
            headers: &s.headers,
            body: s.body.as_deref(),
            body_format: s.body_format,
            timeout_ms: s.timeout_ms,
        }
    }
}

impl<'a> From<&'a crate::domain::connector::ForwardSettings> for RequestTemplate<'a> {
    fn from(s: &'a crate::domain::connector::ForwardSettings) -> Self {
        Self {
            url: &s.url,
            method: s.method,
            headers: &s.headers,
            body: s.body.as_deref(),
            body_format: s.body_format,
            timeout_ms: s.timeout_ms,
        }
    }
}

/// Builds the provider request from templates (the URL percent-encoded, the body
/// escaped for its `body_format`).
///
/// # Errors
/// A template that no longer parses (it was checked when saved): the message names it.
pub fn build_call(
    tpl: RequestTemplate<'_>,
    extra: &[&'static str],
    value: &dyn Fn(&Placeholder) -> String,
) -> Result<ProviderCall, String> {
    let t = |raw: &str, what: &str| Template::parse(raw, extra).map_err(|e| format!("{what}: {e}"));
    let url = t(tpl.url, "url")?.render(value, Escape::UriComponent);
    let mut hs = Vec::new();
    for (k, v) in tpl.headers {
        hs.push((k.clone(), t(v, "headers")?.render(value, Escape::None)));
    }
    let body = match (tpl.method, tpl.body) {
        (HttpMethod::Post, Some(b)) => {
            let (ct, escape) = match tpl.body_format {
                BodyFormat::Json => ("application/json", Escape::JsonString),
                BodyFormat::Form => ("application/x-www-form-urlencoded", Escape::Form),
                BodyFormat::Text => ("text/plain; charset=utf-8", Escape::None),
            };
            Some((ct, t(b, "body")?.render(value, escape)))
        }
        _ => None,
    };
    Ok(ProviderCall {
        post: tpl.method == HttpMethod::Post,
        url,
        headers: hs,
        body,
        timeout: Duration::from_millis(tpl.timeout_ms.max(1)),
    })
}

/// Places a call for `agent`.
///
/// # Errors
/// [`ClickToCallError`], in the order SPEC 5 gives.
pub async fn click_to_call(
    state: &AppState,
    agent: &User,
    input: ClickToCallInput,
) -> Result<ClickToCallOk, ClickToCallError> {
    let lead = state
        .store
        .get_lead(input.lead_id)
        .await?
        .ok_or(ClickToCallError::LeadNotFound)?;
    let (connector, vn) = choose(state, agent, input.virtual_number.as_deref()).await?;
    let number = number_to_call(&lead, input.number.as_deref(), &connector)?;
    if let Some(o) = input.opportunity_id
        && state.store.get_opportunity(o).await?.is_none()
    {
        return Err(invalid(
            "opportunity_id",
            "opportunity_id names no opportunity",
        ));
    }
    let settings: ClickToCallSettings = connector
        .settings
        .click_to_call
        .clone()
        .ok_or(ClickToCallError::NotConfigured)?;
    let record = ClickToCallRecord {
        user_id: agent.id,
        lead_id: lead.id,
        number: number.clone(),
        opportunity_id: input.opportunity_id,
        connector_id: connector.id,
        at: Timestamp::now(),
    };
    if let Some(wait) = state
        .store
        .record_click_to_call(&record, RATE_WINDOW_SECS)
        .await?
    {
        return Err(ClickToCallError::RateLimited(
            u64::try_from(wait).unwrap_or(1),
        ));
    }
    let teams = state.store.connector_team_ids(connector.id).await?;
    let values = CallValues {
        lead: &lead,
        agent,
        number: &number,
        virtual_number: vn.as_ref().map(|v| &v.number),
        opportunity_id: input.opportunity_id,
        connector_teams: &teams,
    };
    let call = build_call(RequestTemplate::from(&settings), &[], &|p| values.value(p)).map_err(
        |message| ClickToCallError::ProviderFailed {
            message,
            provider_status: None,
            provider_body: String::new(),
        },
    )?;

    let started = Instant::now();
    let at = Timestamp::now();
    let answer = client::send(&state.http, &call).await;
    let keyword_ok = settings
        .response_keyword
        .as_deref()
        .is_none_or(|k| answer.body.contains(k));
    let ok = answer.is_success() && keyword_ok;
    let message = match (&answer.error, answer.status) {
        (Some(e), _) => e.clone(),
        (None, Some(s)) if !(200..300).contains(&s) => format!("the provider answered {s}"),
        _ if !keyword_ok => {
            "the provider's answer does not contain the expected keyword".to_owned()
        }
        _ => String::new(),
    };
    state.tlog.record(TelephonyLogRow {
        id: TelephonyLogId::time_ordered(),
        at,
        connector_id: Some(connector.id),
        endpoint: "click_to_call".to_owned(),
        http_status: answer.status.unwrap_or(0),
        outcome: if ok { "ok" } else { "failed" }.to_owned(),
        error_code: (!ok).then(|| "provider_failed".to_owned()),
        error_message: (!ok).then(|| message.clone()),
        call_session_id: None,
        latency_us: i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
        request: json!({
            "method": if call.post { "POST" } else { "GET" },
            "url": client::without_query(&call.url),
            "response_body": answer.body,
        }),
    });
    metrics::counter!("utc_click_to_calls_total", "result" => if ok { "ok" } else { "failed" })
        .increment(1);
    if !ok {
        return Err(ClickToCallError::ProviderFailed {
            message,
            provider_status: answer.status,
            provider_body: answer.body,
        });
    }
    Ok(ClickToCallOk {
        connector_id: connector.id,
        virtual_number: vn.map(|v| v.number.as_str().to_owned()),
        provider_status: answer.status.unwrap_or_default(),
        provider_body: answer.body,
    })
}

/// An outbound call for `agent` to a number the agent clicked within `popup.ttl_secs`,
/// without `LeadId`/`OpportunityId`, takes that click-to-call's lead and opportunity
/// (SPEC 5). Returns the party to resolve with.
///
/// # Errors
/// Store failures.
pub async fn link_outbound(
    state: &AppState,
    agent: Option<crate::domain::ids::UserId>,
    party: &crate::domain::call::CallParty,
) -> Result<crate::domain::call::CallParty, StoreError> {
    let mut out = party.clone();
    let (Some(agent), crate::domain::call::Direction::Outbound, None, None, Some(number)) = (
        agent,
        party.direction,
        party.lead_id,
        party.opportunity_id,
        &party.lead_number,
    ) else {
        return Ok(out);
    };
    let ttl = i64::try_from(state.settings.popup.ttl_secs).unwrap_or(i64::MAX / 2000);
    if let Some(c) = state
        .store
        .recent_click_to_call(agent, number, Timestamp::now().plus_secs(-ttl))
        .await?
    {
        out.lead_id = Some(c.lead_id);
        out.opportunity_id = c.opportunity_id;
    }
    Ok(out)
}
