//! The admin's directory (SPEC 6 and 9): users, teams, leads, opportunities,
//! connectors and virtual numbers. Wire requests hold raw input; each `parse` turns one
//! into a store write or names the field at fault. Updates are JSON Merge Patches
//! applied to the current resource's request form, then parsed like a create.

use crate::domain::connector::{
    CallRouteSettings, ClickToCallSettings, Connector, ConnectorKind, ConnectorSettings,
    PopupSettings,
};
use crate::domain::disposition::DispositionSettings;
use crate::domain::ids::{ConnectorId, LeadId, OpportunityId, TeamId, UserId, VirtualNumberId};
use crate::domain::lead::{Lead, LeadField, Opportunity, OpportunityStatus, is_valid_email};
use crate::domain::phone::{AgentNumber, Country, PhoneNumber};
use crate::domain::template::Template;
use crate::domain::time::Timestamp;
use crate::domain::user::{Role, User};
use crate::service::auth::random_secret;
use crate::state::AppState;
use crate::store::{
    LeadWrite, NewConnector, OpportunityWrite, StoreError, UserWrite, VirtualNumber,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Why a directory change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A field is wrong (422).
    #[error("{message}")]
    Invalid {
        /// snake_case JSON path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The body does not fit the resource's shape (422, field named by the path).
    #[error("{0}")]
    Shape(String, String),
    /// Store refusal or failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DirectoryError {
    DirectoryError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn non_empty(field: &str, v: &str) -> Result<String, DirectoryError> {
    let t = v.trim();
    if t.is_empty() {
        Err(invalid(field, format!("{field} must not be empty")))
    } else {
        Ok(t.to_owned())
    }
}

fn opt_text(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The default country for numbers no connector applies to.
pub fn default_country(state: &AppState) -> Country {
    Country::parse(&state.settings.phone.default_country).unwrap_or_else(|_| {
        // validated at start; IN is the documented default
        Country::parse("IN").expect("BUG: IN is a known country")
    })
}

/// Applies an RFC 7396 JSON Merge Patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Deserialises a merged request, naming the field at fault.
///
/// # Errors
/// [`DirectoryError::Shape`] with the path and serde's message.
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, DirectoryError> {
    crate::error::parse_value(v)
        .map_err(|e| DirectoryError::Shape(e.field.unwrap_or_default(), e.message))
}

// ---------------------------------------------------------------- users

/// `POST /api/v1/users` body.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    /// Display name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Numbers and extensions.
    #[serde(default)]
    pub phone_numbers: Vec<String>,
    /// Teams.
    #[serde(default)]
    pub team_ids: Vec<TeamId>,
    /// Provider groups.
    #[serde(default)]
    pub group_ids: Vec<String>,
    /// Role.
    #[serde(default)]
    pub role: Role,
    /// Active flag.
    #[serde(default = "yes")]
    pub active: bool,
    /// Provider agent id per connector id.
    #[serde(default)]
    pub provider_agent_ids: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

impl UserRequest {
    fn parse(self, country: Country) -> Result<UserWrite, DirectoryError> {
        let email = non_empty("email", &self.email)?;
        if !is_valid_email(&email) {
            return Err(invalid(
                "email",
                "email must be an address like name@example.com",
            ));
        }
        let mut numbers: Vec<AgentNumber> = Vec::new();
        for (i, raw) in self.phone_numbers.iter().enumerate() {
            let n = AgentNumber::parse(raw, country)
                .map_err(|e| invalid(format!("phone_numbers[{i}]"), e.to_string()))?;
            if numbers.contains(&n) {
                return Err(invalid(
                    format!("phone_numbers[{i}]"),
                    "the same number is listed twice",
                ));
            }
            numbers.push(n);
        }
        for key in self.provider_agent_ids.keys() {
            ConnectorId::parse(key).map_err(|_| {
                invalid(
                    format!("provider_agent_ids.{key}"),
                    "keys must be connector ids",
                )
            })?;
        }
        Ok(UserWrite {
            name: non_empty("name", &self.name)?,
            email,
            phone_numbers: numbers,
            team_ids: self.team_ids,
            group_ids: self.group_ids,
            role: self.role,
            active: self.active,
            provider_agent_ids: self.provider_agent_ids,
        })
    }

    fn of(u: &User) -> Self {
        Self {
            name: u.name.clone(),
            email: u.email.clone(),
            phone_numbers: u
                .phone_numbers
                .iter()
                .map(|n| n.as_str().to_owned())
                .collect(),
            team_ids: u.team_ids.clone(),
            group_ids: u.group_ids.clone(),
            role: u.role,
            active: u.active,
            provider_agent_ids: u.provider_agent_ids.clone(),
        }
    }
}

/// Creates a user.
///
/// # Errors
/// [`DirectoryError`].
pub async fn create_user(state: &AppState, req: UserRequest) -> Result<User, DirectoryError> {
    let w = req.parse(default_country(state))?;
    Ok(state.store.create_user(UserId::new(), &w).await?)
}

/// Applies a merge patch to a user; deactivating closes the user's sockets (4403).
///
/// # Errors
/// [`DirectoryError`].
pub async fn patch_user(
    state: &AppState,
    id: UserId,
    patch: &Value,
) -> Result<User, DirectoryError> {
    let current = state
        .store
        .get_user(id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let mut v = serde_json::to_value(UserRequest::of(&current)).unwrap_or_default();
    merge_patch(&mut v, patch);
    let w = from_value::<UserRequest>(v)?.parse(default_country(state))?;
    let user = state.store.update_user(id, &w).await?;
    if !user.active {
        state
            .bus
            .close_user(id, crate::hub::protocol::close::FORBIDDEN)
            .await;
    }
    Ok(user)
}

/// Deletes a user and closes their sockets.
///
/// # Errors
/// [`DirectoryError`].
pub async fn delete_user(state: &AppState, id: UserId) -> Result<(), DirectoryError> {
    state.store.delete_user(id).await?;
    state
        .bus
        .close_user(id, crate::hub::protocol::close::FORBIDDEN)
        .await;
    Ok(())
}

// ---------------------------------------------------------------- leads

/// `POST /api/v1/leads` body.
#[derive(Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LeadRequest {
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone (any format).
    pub phone: Option<String>,
    /// Mobile (any format).
    pub mobile: Option<String>,
    /// Further numbers.
    pub secondary_numbers: Vec<String>,
    /// Owner.
    pub owner_id: Option<UserId>,
    /// Source.
    pub source: Option<String>,
    /// Origin.
    pub origin: Option<String>,
    /// Stage.
    pub stage: Option<String>,
    /// Custom fields.
    pub fields: BTreeMap<String, String>,
    /// External id.
    pub external_id: Option<String>,
}

impl LeadRequest {
    /// Validates a lead as `POST /api/v1/leads` does (the lead import reuses it):
    /// numbers read with `country` into E.164, the email's shape, custom field names.
    ///
    /// # Errors
    /// [`DirectoryError::Invalid`] naming the first field at fault (e.g. `email`,
    /// `secondary_numbers[1]`, `fields.x`).
    pub fn parse(self, country: Country) -> Result<LeadWrite, DirectoryError> {
        let phone = |field: String,
                     raw: Option<String>|
         -> Result<Option<PhoneNumber>, DirectoryError> {
            opt_text(raw)
                .map(|s| PhoneNumber::parse(&s, country).map_err(|e| invalid(field, e.to_string())))
                .transpose()
        };
        let email = opt_text(self.email);
        if let Some(e) = &email
            && !is_valid_email(e)
        {
            return Err(invalid(
                "email",
                "email must be an address like name@example.com",
            ));
        }
        let mut secondary = Vec::new();
        for (i, raw) in self.secondary_numbers.into_iter().enumerate() {
            if let Some(n) = phone(format!("secondary_numbers[{i}]"), Some(raw))? {
                secondary.push(n);
            }
        }
        for key in self.fields.keys() {
            if !matches!(LeadField::parse(key), Ok(LeadField::Custom(_))) {
                return Err(invalid(
                    format!("fields.{key}"),
                    "custom field names must not be lead field names",
                ));
            }
        }
        Ok(LeadWrite {
            first_name: opt_text(self.first_name),
            last_name: opt_text(self.last_name),
            email,
            phone: phone("phone".into(), self.phone)?,
            mobile: phone("mobile".into(), self.mobile)?,
            secondary_numbers: secondary,
            owner_id: self.owner_id,
            source: opt_text(self.source),
            origin: opt_text(self.origin),
            stage: opt_text(self.stage),
            fields: self.fields,
            external_id: opt_text(self.external_id),
        })
    }

    fn of(l: &Lead) -> Self {
        let n = |p: &Option<PhoneNumber>| p.as_ref().map(|p| p.as_str().to_owned());
        Self {
            first_name: l.first_name.clone(),
            last_name: l.last_name.clone(),
            email: l.email.clone(),
            phone: n(&l.phone),
            mobile: n(&l.mobile),
            secondary_numbers: l
                .secondary_numbers
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            owner_id: l.owner_id,
            source: l.source.clone(),
            origin: l.origin.clone(),
            stage: l.stage.clone(),
            fields: l.fields.clone(),
            external_id: l.external_id.clone(),
        }
    }
}

/// Creates a lead.
///
/// # Errors
/// [`DirectoryError`].
pub async fn create_lead(state: &AppState, req: LeadRequest) -> Result<Lead, DirectoryError> {
    let w = req.parse(default_country(state))?;
    Ok(state.store.create_lead(LeadId::new(), &w).await?)
}

/// Applies a merge patch to a lead.
///
/// # Errors
/// [`DirectoryError`].
pub async fn patch_lead(
    state: &AppState,
    id: LeadId,
    patch: &Value,
) -> Result<Lead, DirectoryError> {
    let current = state
        .store
        .get_lead(id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let mut v = serde_json::to_value(LeadRequest::of(&current)).unwrap_or_default();
    merge_patch(&mut v, patch);
    let w = from_value::<LeadRequest>(v)?.parse(default_country(state))?;
    Ok(state.store.update_lead(id, &w).await?)
}

/// Lists or searches leads (SPEC 6): `phone` (any format) finds every lead holding the
/// number; the agent's `q` is an exact number match when it reads as a number, else a
/// case-insensitive prefix of first name, last name or email, at most 20 results;
/// without either, admins list every lead and agents are asked for `q`.
///
/// # Errors
/// [`DirectoryError::Invalid`] naming `phone` or `q`; store failures.
pub async fn search_leads(
    state: &AppState,
    phone: Option<&str>,
    q: Option<&str>,
    admin: bool,
    mut page: crate::store::PageRequest,
) -> Result<crate::store::Page<Lead>, DirectoryError> {
    use crate::store::LeadFilter;
    let filter = match (phone, q) {
        (Some(p), _) => LeadFilter::Number(search_number(state, "phone", p)?),
        (None, Some(term)) => {
            page.limit = page.limit.min(20);
            match search_number(state, "q", term) {
                Ok(n) => LeadFilter::Number(n),
                Err(_) if term.trim().is_empty() => {
                    return Err(invalid("q", "q must not be empty"));
                }
                Err(_) => LeadFilter::Prefix(term.trim().to_owned()),
            }
        }
        (None, None) if admin => LeadFilter::All,
        (None, None) => return Err(invalid("q", "agents search leads with q")),
    };
    Ok(state.store.list_leads(&filter, &page).await?)
}

/// Reads a phone-number search term with the default country.
///
/// # Errors
/// [`DirectoryError::Invalid`] naming `field`.
pub fn search_number(
    state: &AppState,
    field: &str,
    raw: &str,
) -> Result<PhoneNumber, DirectoryError> {
    PhoneNumber::parse(raw, default_country(state)).map_err(|e| invalid(field, e.to_string()))
}

// ---------------------------------------------------------------- opportunities

/// `POST /api/v1/opportunities` body.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpportunityRequest {
    /// The lead.
    pub lead_id: LeadId,
    /// Name.
    pub name: String,
    /// Owner.
    #[serde(default)]
    pub owner_id: Option<UserId>,
    /// Status.
    #[serde(default)]
    pub status: OpportunityStatus,
}

impl OpportunityRequest {
    fn parse(self) -> Result<OpportunityWrite, DirectoryError> {
        Ok(OpportunityWrite {
            lead_id: self.lead_id,
            name: non_empty("name", &self.name)?,
            owner_id: self.owner_id,
            status: self.status,
        })
    }
}

/// Creates an opportunity.
///
/// # Errors
/// [`DirectoryError`].
pub async fn create_opportunity(
    state: &AppState,
    req: OpportunityRequest,
) -> Result<Opportunity, DirectoryError> {
    Ok(state
        .store
        .create_opportunity(OpportunityId::new(), &req.parse()?)
        .await?)
}

/// Applies a merge patch to an opportunity.
///
/// # Errors
/// [`DirectoryError`].
pub async fn patch_opportunity(
    state: &AppState,
    id: OpportunityId,
    patch: &Value,
) -> Result<Opportunity, DirectoryError> {
    let o = state
        .store
        .get_opportunity(id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let mut v =
        json!({"lead_id": o.lead_id, "name": o.name, "owner_id": o.owner_id, "status": o.status});
    merge_patch(&mut v, patch);
    let w = from_value::<OpportunityRequest>(v)?.parse()?;
    Ok(state.store.update_opportunity(id, &w).await?)
}

// ---------------------------------------------------------------- connectors

/// `POST /api/v1/connectors` body.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorRequest {
    /// Display name.
    pub name: String,
    /// Wire format.
    #[serde(default = "generic")]
    pub kind: ConnectorKind,
    /// Region for national numbers.
    #[serde(default)]
    pub default_country: Option<String>,
    /// IANA time zone.
    #[serde(default = "utc")]
    pub timezone: String,
    /// Source of created leads.
    #[serde(default)]
    pub lead_source: Option<String>,
    /// Popup settings.
    #[serde(default)]
    pub popup: PopupSettings,
    /// Disposition form.
    #[serde(default)]
    pub disposition: DispositionSettings,
    /// Click-to-call.
    #[serde(default)]
    pub click_to_call: Option<ClickToCallSettings>,
    /// Call routing.
    #[serde(default)]
    pub call_route: CallRouteSettings,
}

fn generic() -> ConnectorKind {
    ConnectorKind::Generic
}

fn utc() -> String {
    "UTC".to_owned()
}

fn check_template(field: &str, raw: &str, extra: &[&'static str]) -> Result<(), DirectoryError> {
    Template::parse(raw, extra)
        .map(|_| ())
        .map_err(|e| invalid(field, e.to_string()))
}

fn check_body(
    field: &str,
    raw: &str,
    format: crate::domain::connector::BodyFormat,
    extra: &[&'static str],
) -> Result<(), DirectoryError> {
    let t = Template::parse(raw, extra).map_err(|e| invalid(field, e.to_string()))?;
    if format == crate::domain::connector::BodyFormat::Json {
        t.check_json_body()
            .map_err(|e| invalid(field, e.to_string()))?;
    }
    Ok(())
}

impl ConnectorRequest {
    fn parse(
        self,
        fallback_country: Country,
    ) -> Result<(ConnectorKind, ConnectorSettings), DirectoryError> {
        let default_country = match opt_text(self.default_country) {
            Some(c) => Country::parse(&c).map_err(|_| {
                invalid(
                    "default_country",
                    "default_country must be an ISO 3166 alpha-2 code",
                )
            })?,
            None => fallback_country,
        };
        let timezone = self
            .timezone
            .trim()
            .parse::<chrono_tz::Tz>()
            .map_err(|_| invalid("timezone", "timezone must be an IANA time zone"))?;
        if let Some(url) = &self.popup.agent_panel_url {
            check_template("popup.agent_panel_url", url, &[])?;
        }
        if let Some(c) = &self.click_to_call {
            check_template("click_to_call.url", &c.url, &[])?;
            if let Some(b) = &c.body {
                check_body("click_to_call.body", b, c.body_format, &[])?;
            }
            for (k, v) in &c.headers {
                check_template(&format!("click_to_call.headers.{k}"), v, &[])?;
            }
        }
        if let Some(f) = &self.disposition.forward {
            let names = crate::domain::template::FORWARD_NAMES;
            check_template("disposition.forward.url", &f.url, names)?;
            if let Some(b) = &f.body {
                check_body("disposition.forward.body", b, f.body_format, names)?;
            }
            for (k, v) in &f.headers {
                check_template(&format!("disposition.forward.headers.{k}"), v, names)?;
            }
        }
        if LeadField::parse(&self.disposition.field).is_err() {
            return Err(invalid(
                "disposition.field",
                "this lead field cannot be written",
            ));
        }
        for (i, f) in self.disposition.field_update.fields.iter().enumerate() {
            if LeadField::parse(f).is_err() {
                return Err(invalid(
                    format!("disposition.field_update.fields[{i}]"),
                    "this lead field cannot be written",
                ));
            }
        }
        Ok((
            self.kind,
            ConnectorSettings {
                name: non_empty("name", &self.name)?,
                default_country,
                timezone,
                lead_source: opt_text(self.lead_source),
                popup: self.popup,
                disposition: self.disposition,
                click_to_call: self.click_to_call,
                call_route: self.call_route,
            },
        ))
    }

    fn of(c: &Connector) -> Self {
        let s = &c.settings;
        Self {
            name: s.name.clone(),
            kind: c.kind,
            default_country: Some(s.default_country.as_str().to_owned()),
            timezone: s.timezone.name().to_owned(),
            lead_source: s.lead_source.clone(),
            popup: s.popup.clone(),
            disposition: s.disposition.clone(),
            click_to_call: s.click_to_call.clone(),
            call_route: s.call_route,
        }
    }
}

/// A connector as the admin API shows it: its settings, id, keys and state.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectorView {
    /// Its id.
    pub id: ConnectorId,
    /// Every setting.
    #[serde(flatten)]
    pub settings: ConnectorRequest,
    /// The access key providers present.
    pub access_key: String,
    /// The secret key: only in the answers to create, clone and rotate-keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// Whether it is the default connector.
    pub is_default: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A connector as the admin API shows it; `secret_key` only when `with_secret`.
pub fn connector_json(c: &Connector, with_secret: bool) -> ConnectorView {
    use secrecy::ExposeSecret as _;
    ConnectorView {
        id: c.id,
        settings: ConnectorRequest::of(c),
        access_key: c.access_key.clone(),
        secret_key: with_secret.then(|| c.secret_key.expose_secret().to_owned()),
        is_default: c.is_default,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

/// Creates a connector with fresh keys.
///
/// # Errors
/// [`DirectoryError`].
pub async fn create_connector(
    state: &AppState,
    req: ConnectorRequest,
) -> Result<Connector, DirectoryError> {
    let (kind, settings) = req.parse(default_country(state))?;
    let (access_key, secret_key) = new_keys();
    Ok(state
        .store
        .create_connector(NewConnector {
            id: ConnectorId::new(),
            kind,
            access_key,
            secret_key,
            settings,
        })
        .await?)
}

fn new_keys() -> (String, String) {
    (format!("AK{}", random_secret(15)), random_secret(30))
}

/// Clones a connector: every setting and the team assignments, new keys, not the
/// virtual numbers (they belong to one connector); `name` renames the clone.
///
/// # Errors
/// [`DirectoryError`].
pub async fn clone_connector(
    state: &AppState,
    id: ConnectorId,
    name: Option<String>,
) -> Result<Connector, DirectoryError> {
    let source = state
        .store
        .get_connector(id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let mut settings = source.settings;
    if let Some(n) = name {
        settings.name = non_empty("name", &n)?;
    }
    let (access_key, secret_key) = new_keys();
    let new = NewConnector {
        id: ConnectorId::new(),
        kind: source.kind,
        access_key,
        secret_key,
        settings,
    };
    Ok(state.store.clone_connector(id, new).await?)
}

/// Replaces both keys of a connector; the old ones stop working at once.
///
/// # Errors
/// [`DirectoryError`].
pub async fn rotate_keys(state: &AppState, id: ConnectorId) -> Result<Connector, DirectoryError> {
    let (access_key, secret_key) = new_keys();
    Ok(state
        .store
        .rotate_connector_keys(id, &access_key, &secret_key)
        .await?)
}

/// The four provider-facing URLs of a connector.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProviderUrls {
    /// Agent popup (`/v2/Telephony.svc/ShowAgentPopup`).
    pub agent_popup: String,
    /// Call log (`/v2/Telephony.svc/LogCall`).
    pub call_log: String,
    /// Call route.
    pub call_route: String,
    /// Single sign-on.
    pub sso: String,
}

/// The key headers a provider sends.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyHeaders {
    /// The access key.
    #[serde(rename = "x-LSQ-AccessKey")]
    pub access_key: String,
    /// The secret key.
    #[serde(rename = "x-LSQ-SecretKey")]
    pub secret_key: String,
}

/// `GET /api/v1/connectors/{id}/urls`: ready to paste into a provider's console.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectorUrls {
    /// Headers carrying the keys.
    pub headers: KeyHeaders,
    /// The URLs, keys to be sent as headers.
    pub urls: ProviderUrls,
    /// The URLs with the keys in the query string.
    pub urls_with_keys: ProviderUrls,
}

/// The provider-facing URLs of a connector, ready to paste into a provider's console.
pub fn connector_urls(state: &AppState, c: &Connector) -> ConnectorUrls {
    use crate::domain::template::percent_encode;
    use secrecy::ExposeSecret as _;
    let base = state.settings.server.public_url.trim_end_matches('/');
    let keys = format!(
        "?accessKey={}&secretKey={}",
        percent_encode(&c.access_key),
        percent_encode(c.secret_key.expose_secret())
    );
    let urls = |suffix: &str| ProviderUrls {
        agent_popup: format!("{base}/v2/Telephony.svc/ShowAgentPopup{suffix}"),
        call_log: format!("{base}/v2/Telephony.svc/LogCall{suffix}"),
        call_route: format!("{base}/api/v1/telephony/call-route{suffix}"),
        sso: format!("{base}/api/v1/sso{suffix}"),
    };
    ConnectorUrls {
        headers: KeyHeaders {
            access_key: c.access_key.clone(),
            secret_key: c.secret_key.expose_secret().to_owned(),
        },
        urls: urls(""),
        urls_with_keys: urls(&keys),
    }
}

/// Applies a merge patch to a connector's settings (`kind` cannot change).
///
/// # Errors
/// [`DirectoryError`].
pub async fn patch_connector(
    state: &AppState,
    id: ConnectorId,
    patch: &Value,
) -> Result<Connector, DirectoryError> {
    let current = state
        .store
        .get_connector(id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let mut v = serde_json::to_value(ConnectorRequest::of(&current)).unwrap_or_default();
    merge_patch(&mut v, patch);
    let (kind, settings) = from_value::<ConnectorRequest>(v)?.parse(default_country(state))?;
    if kind != current.kind {
        return Err(invalid("kind", "kind cannot change"));
    }
    Ok(state.store.update_connector(id, &settings).await?)
}

/// `POST /api/v1/connectors/{id}/virtual-numbers` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualNumberRequest {
    /// The number, any format.
    pub number: String,
    /// Optional tag.
    #[serde(default)]
    pub tag: Option<String>,
}

/// Adds a virtual number to a connector (numbers read with its default country).
///
/// # Errors
/// [`DirectoryError`] (`number_in_use` as a store conflict).
pub async fn add_virtual_number(
    state: &AppState,
    connector: ConnectorId,
    req: VirtualNumberRequest,
) -> Result<VirtualNumber, DirectoryError> {
    let c = state
        .store
        .get_connector(connector)
        .await?
        .ok_or(StoreError::NotFound)?;
    let number = PhoneNumber::parse(&req.number, c.settings.default_country)
        .map_err(|e| invalid("number", e.to_string()))?;
    Ok(state
        .store
        .add_virtual_number(VirtualNumber {
            id: VirtualNumberId::new(),
            number,
            tag: opt_text(req.tag),
            connector_id: connector,
            created_at: Timestamp::now(),
        })
        .await?)
}

/// Reads a team name.
///
/// # Errors
/// [`DirectoryError::Invalid`] for an empty name.
pub fn team_name(raw: &str) -> Result<String, DirectoryError> {
    non_empty("name", raw)
}
