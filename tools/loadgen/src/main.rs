//! `loadgen`: a whole-system benchmark for `utc-gateway`.
//!
//! It talks to a running gateway only through its public surfaces (the admin API, the
//! provider endpoints and the agent WebSocket) and measures:
//!
//! - `popup-rtt`: the time from just before a provider `ShowAgentPopup` POST is sent to
//!   the moment the agent's socket receives the matching `popup` frame, plus the HTTP
//!   response time and, with `--concurrency N`, the throughput of N parallel senders;
//! - `popup-rate`: popups fired at a fixed rate (an open loop) to many open sockets:
//!   round trip from when each popup was due, p50/p99/p99.9, lost popups, and the
//!   machine's busy share;
//! - `idle-sockets`: the gateway's resident memory per idle authenticated socket;
//! - `call-log`: call-log ingestion (`LogCall`) latency and throughput, with a check
//!   through the admin API that every session was stored exactly once;
//! - `call-route`: call-route (`GET /api/v1/telephony/call-route`) latency and
//!   throughput against many seeded leads, after `route-setup` created the connector
//!   and the leads' owner (the leads are seeded by `scripts/seed_leads.py`).
//!
//! Every run prints a small human table and then exactly one JSON line with the same
//! numbers (the line starts with `{`).

mod admin;
mod call_log;
mod call_route;
mod idle;
mod popup_rate;
mod popup_rtt;
mod socket;
mod stats;

use clap::{Parser, Subcommand};

/// Whole-system benchmark for utc-gateway.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about)]
struct Cli {
    /// What to measure.
    #[command(subcommand)]
    command: Command,
}

/// The benchmarks.
#[derive(Subcommand, Debug)]
enum Command {
    /// Popup round trip (provider POST -> agent socket frame), HTTP time and throughput.
    PopupRtt(popup_rtt::Args),
    /// Popups at a fixed rate over many sockets: round trip p50/p99/p99.9, lost popups,
    /// the machine's busy share.
    PopupRate(popup_rate::Args),
    /// Gateway memory (VmRSS) per idle authenticated agent socket.
    IdleSockets(idle::Args),
    /// Call-log ingestion (LogCall) latency and throughput, and the stored count.
    CallLog(call_log::Args),
    /// Creates a connector and a lead owner for `call-route`; prints their keys and ids.
    RouteSetup(call_route::SetupArgs),
    /// Call-route (who owns this caller) latency and throughput over seeded leads.
    CallRoute(call_route::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::PopupRtt(args) => popup_rtt::run(args).await,
        Command::PopupRate(args) => popup_rate::run(args).await,
        Command::IdleSockets(args) => idle::run(args).await,
        Command::CallLog(args) => call_log::run(args).await,
        Command::RouteSetup(args) => call_route::setup(args).await,
        Command::CallRoute(args) => call_route::run(args).await,
    }
}
