//! `loadgen`: a whole-system benchmark for `utc-gateway`.
//!
//! It talks to a running gateway only through its public surfaces (the admin API, the
//! provider popup endpoint and the agent WebSocket) and measures:
//!
//! - `popup-rtt`: the time from just before a provider `ShowAgentPopup` POST is sent to
//!   the moment the agent's socket receives the matching `popup` frame, plus the HTTP
//!   response time and, with `--concurrency N`, the throughput of N parallel senders;
//! - `idle-sockets`: the gateway's resident memory per idle authenticated socket;
//! - `call-log`: call-log ingestion (`LogCall`) latency and throughput, with a check
//!   through the admin API that every session was stored exactly once.
//!
//! Every run prints a small human table and then exactly one JSON line with the same
//! numbers (the line starts with `{`).

mod admin;
mod call_log;
mod idle;
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
    /// Gateway memory (VmRSS) per idle authenticated agent socket.
    IdleSockets(idle::Args),
    /// Call-log ingestion (LogCall) latency and throughput, and the stored count.
    CallLog(call_log::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::PopupRtt(args) => popup_rtt::run(args).await,
        Command::IdleSockets(args) => idle::run(args).await,
        Command::CallLog(args) => call_log::run(args).await,
    }
}
