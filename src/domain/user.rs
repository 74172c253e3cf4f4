//! Users (agents) and teams.

use super::ids::{TeamId, UserId};
use super::phone::AgentNumber;
use super::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A user's role; informational in this version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes calls.
    #[default]
    Agent,
    /// Administers (the admin API still needs the admin token).
    Admin,
}

impl Role {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Admin => "admin",
        }
    }
}

/// A user as stored and shown (`GET /api/v1/me`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Display name.
    pub name: String,
    /// Email, unique case-insensitively.
    pub email: String,
    /// Phone numbers (E.164) and extensions (as given), in order.
    pub phone_numbers: Vec<AgentNumber>,
    /// Teams the user belongs to.
    pub team_ids: Vec<TeamId>,
    /// Provider-side group ids.
    pub group_ids: Vec<String>,
    /// Role.
    pub role: Role,
    /// Inactive users get no popups and cannot connect.
    pub active: bool,
    /// Provider agent id per connector id.
    pub provider_agent_ids: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A team as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Team {
    /// Its id.
    pub id: TeamId,
    /// Its name.
    pub name: String,
    /// Members.
    pub user_ids: Vec<UserId>,
    /// Connectors assigned to it.
    pub connector_ids: Vec<super::ids::ConnectorId>,
    /// When it was created.
    pub created_at: Timestamp,
}
