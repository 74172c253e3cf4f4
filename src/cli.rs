//! Command line: `serve` (the default) and `token --user <email>`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// utc-gateway: a real-time telephony-to-CRM gateway.
#[derive(Parser, Debug)]
#[command(name = "utc-gateway", version, about)]
pub struct Cli {
    /// Settings file (must exist); default ./config.toml when present.
    #[arg(long, global = true, env = "UTC_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Print an agent token (JWT) for the user with this email.
    Token {
        /// The user's email.
        #[arg(long)]
        user: String,
    },
}
