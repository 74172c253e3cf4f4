//! Thin entry point: parse the command line, load settings, start logging, run.

use anyhow::Context as _;
use clap::Parser as _;
use secrecy::ExposeSecret as _;
use utc_gateway::app::App;
use utc_gateway::cli::{Cli, Command};
use utc_gateway::config::Settings;

// A popup allocates a few hundred small objects across threads (request, JSON, frame);
// mimalloc's thread-local free lists halve what glibc's malloc costs there (see
// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match (cli.command, Settings::load(cli.config.as_deref())) {
        // the simulator is a client of a gateway somewhere: it needs no settings
        (Some(Command::Simulate(args)), _) => utc_gateway::cli::simulate::run(*args).await,
        (_, Err(e)) => Err(e),
        (command, Ok(settings)) => match command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::Token { user } => token(settings, &user).await,
            Command::ImportLeads { file, format } => {
                utc_gateway::cli::import_leads::run(&settings, &file, format).await
            }
            Command::Simulate(args) => utc_gateway::cli::simulate::run(*args).await,
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // the whole chain of causes, one line, no backtrace
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    utc_gateway::telemetry::init(&settings.log, std::io::stderr)?;
    let app = App::build(settings).await?;
    let addr = app.local_addr()?;
    println!("utc-gateway listening on http://{addr}");
    if let Some(token) = app.generated_admin_token() {
        println!(
            "admin token (generated now, shown once; keep it): {}",
            token.expose_secret()
        );
    }
    let token = app.state().shutdown.token.clone();
    tokio::spawn(async move {
        utc_gateway::shutdown::signal().await;
        tracing::info!("shutdown signal received");
        token.cancel();
    });
    app.run_until_stopped().await
}

async fn token(settings: Settings, email: &str) -> anyhow::Result<()> {
    let store = utc_gateway::store::open(&settings.store.url).await?;
    let (keys, _) = utc_gateway::service::auth::Keys::load(&settings, &store).await?;
    let user = store
        .user_by_email(email)
        .await?
        .with_context(|| format!("no user with email {email}"))?;
    let (token, _) = keys.issue(&user)?;
    println!("{token}");
    Ok(())
}
