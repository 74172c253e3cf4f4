//! `idle-sockets`: the gateway's memory per idle authenticated agent socket.
//!
//! Creates `ceil(sockets / 10)` agents (the gateway allows 10 sockets per user), reads
//! the gateway's `VmRSS` from `/proc/<pid>/status`, opens the sockets a few at a time
//! (each waits for `ready`), waits for things to settle, reads `VmRSS` again, and
//! reports the difference per socket. Then it checks every socket is still open with a
//! `ping`/`pong` exchange, and only then closes them.

use crate::admin::{self, AdminClient};
use crate::socket::AgentSocket;
use crate::stats::{self, round3};
use anyhow::{Context, bail};
use futures_util::future::join_all;
use futures_util::{StreamExt, stream};
use serde_json::json;
use std::time::{Duration, Instant};

/// Sockets per agent (the gateway's default `ws.max_sockets_per_user`).
const PER_AGENT: usize = 10;

/// Options of `idle-sockets`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway and its admin token.
    #[command(flatten)]
    pub gateway: admin::Gateway,
    /// Sockets to open.
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    /// The gateway's process id (its /proc/<pid>/status is read).
    #[arg(long)]
    pub pid: u32,
    /// Sockets being opened at once.
    #[arg(long, default_value_t = 50)]
    pub parallelism: usize,
    /// Seconds to wait after the last socket opened before reading VmRSS again.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
}

/// The `VmRSS` of `pid`, in KiB.
///
/// # Errors
/// The status file is unreadable or has no `VmRSS` line.
pub fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("{path} has no VmRSS line"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Runs `idle-sockets` and prints its table and JSON line.
///
/// # Errors
/// Bad options, a failed setup, an unreadable VmRSS, or sockets that failed to open or
/// did not stay open.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.sockets == 0 || args.parallelism == 0 {
        bail!("--sockets and --parallelism must be at least 1");
    }
    let base = admin::base_url(&args.gateway.url);
    let ws = admin::ws_url(&base)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let admin = AdminClient::new(client, &base, &args.gateway.admin_token);
    let run = admin::run_nonce();

    let agents_needed = args.sockets.div_ceil(PER_AGENT);
    let team = admin
        .create_team(&format!("bench-idle-{run:016x}"))
        .await
        .context("creating the team")?;
    let agents = admin.create_agents(run, agents_needed, &team).await?;

    let before = vm_rss_kib(args.pid)?;
    let opening = Instant::now();
    let results: Vec<anyhow::Result<AgentSocket>> = stream::iter(0..args.sockets)
        .map(|i| {
            let token = agents[i / PER_AGENT].token.clone();
            let ws = ws.clone();
            async move {
                AgentSocket::connect(&ws, &token, Duration::from_secs(30))
                    .await
                    .with_context(|| format!("socket {i}"))
            }
        })
        .buffer_unordered(args.parallelism)
        .collect()
        .await;
    let open_time = opening.elapsed();
    let mut sockets = Vec::with_capacity(results.len());
    let mut open_errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => sockets.push(s),
            Err(e) => open_errors.push(format!("{e:#}")),
        }
    }
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let after = vm_rss_kib(args.pid)?;
    let opened = sockets.len();
    // KiB and socket counts are far below f64's exact integer range.
    #[allow(clippy::cast_precision_loss)]
    let per_socket = if opened == 0 {
        0.0
    } else {
        (after as f64 - before as f64) / opened as f64
    };

    let pings = join_all(sockets.iter_mut().map(|s| s.ping(Duration::from_secs(10)))).await;
    let mut pongs = Vec::new();
    let mut ping_errors = Vec::new();
    for p in pings {
        match p {
            Ok(d) => pongs.push(d),
            Err(e) => ping_errors.push(format!("{e:#}")),
        }
    }
    let alive = pongs.len();
    let pong = stats::summarize(pongs);
    join_all(sockets.into_iter().map(AgentSocket::close)).await;

    println!(
        "idle-sockets: {} sockets over {agents_needed} agents, gateway pid {}",
        args.sockets, args.pid
    );
    println!(
        "opened               {opened} in {:.3} s ({} failed, {} at a time)",
        open_time.as_secs_f64(),
        open_errors.len(),
        args.parallelism
    );
    println!("VmRSS before         {before} KiB");
    println!(
        "VmRSS after          {after} KiB (read {} s after the last socket opened)",
        args.settle_secs
    );
    println!("per socket           {per_socket:.2} KiB");
    println!(
        "still open           {alive}/{opened} answered ping with pong ({} failed)",
        ping_errors.len()
    );
    println!("{}", stats::header());
    println!("{}", stats::row("ping -> pong (all)", pong));
    for e in open_errors.iter().take(5) {
        println!("open error           {e}");
    }
    for e in ping_errors.iter().take(5) {
        println!("ping error           {e}");
    }
    let line = json!({
        "bench": "idle-sockets",
        "sockets": args.sockets,
        "agents": agents_needed,
        "opened": opened,
        "open_failures": open_errors.len(),
        "open_s": round3(open_time.as_secs_f64()),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_socket": round3(per_socket),
        "alive": alive,
        "ping_failures": ping_errors.len(),
        "pong_ms": stats::json_or_null(pong),
    });
    println!("{line}");
    if !open_errors.is_empty() || !ping_errors.is_empty() {
        bail!(
            "{} sockets failed to open and {} did not answer a ping",
            open_errors.len(),
            ping_errors.len()
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let s = "Name:\tutc-gateway\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(s), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(vm_rss_kib(std::process::id()).unwrap() > 0);
    }
}
