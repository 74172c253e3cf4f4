//! The business rules, one file per use case. Services take [`crate::state::AppState`]
//! handles, decide, store through `store/` and hand events to `hub/`; they never know
//! about HTTP.

pub mod agent;
pub mod auth;
pub mod call_log;
pub mod click_to_call;
pub mod directory;
pub mod disposition;
pub mod import;
pub mod popup;
pub mod ratelimit;
pub mod route;
pub mod sso;
pub mod tlog;
