//! Command line: `serve` (the default), `token --user <email>`, `import-leads <file>`
//! and `simulate` (a provider played against a running gateway).

pub mod import_leads;
pub mod simulate;

use clap::{Parser, Subcommand, ValueEnum};
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
    /// Import leads from a CSV or NDJSON file straight into the configured store
    /// (SPEC 6 "Lead import"); exits 0 once the file is read, even with refused rows.
    ImportLeads {
        /// The file.
        file: PathBuf,
        /// Its format (default: from the extension: .csv, or .ndjson / .jsonl).
        #[arg(long, value_enum)]
        format: Option<ImportFileFormat>,
    },
    /// Play a telephony provider against a running gateway: popups, then call logs.
    Simulate(Box<simulate::SimulateArgs>),
}

/// `--format` of `import-leads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImportFileFormat {
    /// A header row of lead field names, then one lead per row.
    Csv,
    /// One lead JSON object per line.
    Ndjson,
}
