//! Connectors: one provider instance each, with its own keys and settings.

use super::disposition::DispositionSettings;
use super::ids::ConnectorId;
use super::phone::Country;
use super::time::Timestamp;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The wire format a connector speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// LeadSquared's Generic Telephony Connector format.
    Generic,
    /// Knowlarity Super Receptionist V2.
    SuperReceptionistV2,
}

impl ConnectorKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::SuperReceptionistV2 => "super_receptionist_v2",
        }
    }

    /// Reads the stored form.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "generic" => Some(Self::Generic),
            "super_receptionist_v2" => Some(Self::SuperReceptionistV2),
            _ => None,
        }
    }
}

/// Popup settings of a connector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PopupSettings {
    /// When false, popup requests are validated and logged, and nothing else happens.
    pub enabled: bool,
    /// A URL template (`@{Lead:<field>,<default>}` placeholders) for the agent panel.
    pub agent_panel_url: Option<String>,
    /// Show the agent panel URL in the console instead of the built-in lead card.
    pub use_external_url: bool,
}

impl Default for PopupSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            agent_panel_url: None,
            use_external_url: false,
        }
    }
}

/// How a body template is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// `application/json`; placeholders only inside string literals.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `text/plain`.
    Text,
}

/// HTTP method of an outbound provider call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub enum HttpMethod {
    /// GET
    #[serde(rename = "GET")]
    Get,
    /// POST
    #[default]
    #[serde(rename = "POST")]
    Post,
}

fn default_timeout_ms() -> u64 {
    5000
}

/// Click-to-call settings: how to ask the provider to place a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClickToCallSettings {
    /// URL template.
    pub url: String,
    /// GET or POST.
    #[serde(default)]
    pub method: HttpMethod,
    /// Header templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template.
    #[serde(default)]
    pub body: Option<String>,
    /// Body encoding.
    #[serde(default)]
    pub body_format: BodyFormat,
    /// When set, a 2xx body must contain it.
    #[serde(default)]
    pub response_keyword: Option<String>,
    /// Timeout of the provider call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Where accepted dispositions are forwarded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardSettings {
    /// URL template.
    pub url: String,
    /// GET or POST.
    #[serde(default)]
    pub method: HttpMethod,
    /// Header templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template.
    #[serde(default)]
    pub body: Option<String>,
    /// Body encoding.
    #[serde(default)]
    pub body_format: BodyFormat,
    /// Timeout of one attempt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Whom a call is routed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// The lead's owner.
    #[default]
    Lead,
    /// The owner of the lead's latest open opportunity.
    Opportunity,
}

/// Call-route settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CallRouteSettings {
    /// Lead or opportunity routing.
    pub mode: RouteMode,
}

/// Every editable setting of a connector (what create, update and clone carry).
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorSettings {
    /// Display name.
    pub name: String,
    /// Region for national numbers.
    pub default_country: Country,
    /// IANA time zone for provider times without an offset.
    pub timezone: chrono_tz::Tz,
    /// Source of leads this connector creates.
    pub lead_source: Option<String>,
    /// Popup settings.
    pub popup: PopupSettings,
    /// The disposition form.
    pub disposition: DispositionSettings,
    /// Click-to-call, when configured.
    pub click_to_call: Option<ClickToCallSettings>,
    /// Call routing.
    pub call_route: CallRouteSettings,
}

/// A connector as stored.
#[derive(Clone)]
pub struct Connector {
    /// Its id.
    pub id: ConnectorId,
    /// Its wire format; never changes.
    pub kind: ConnectorKind,
    /// The access key providers present.
    pub access_key: String,
    /// The secret key providers present.
    pub secret_key: SecretString,
    /// Its settings.
    pub settings: ConnectorSettings,
    /// Whether it is the default connector.
    pub is_default: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}
