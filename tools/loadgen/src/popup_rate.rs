//! `popup-rate`: popups fired at a fixed rate over many open agent sockets (an open
//! loop, as providers send them: nobody waits for the previous popup).
//!
//! Setup: one team, one connector, `--sockets` agents with one authenticated socket
//! each, `--leads` leads. Then popup `i` is due at `start + i / rate` and goes to agent
//! `i % sockets`; it is sent from its own task over a keep-alive HTTP pool, so a slow
//! answer never delays the next popup (no coordinated omission). Its round trip runs
//! from the moment its POST is handed to the HTTP client to the moment the agent's
//! socket read the `popup` frame; the same measured from when it was **due** is shown
//! beside it (it adds the load tool's own lateness: timers fire up to 1 ms late). Popups of the first `--warmup-secs` are sent but not recorded. A popup
//! whose frame did not come within `--frame-timeout-ms` after the last one was due is
//! lost. The machine's busy share (all cores, from /proc/stat) over the measured phase
//! is reported beside the figures, and with `--gateway-pid` the gateway's own CPU share
//! and memory.

use crate::admin::{self, AdminClient};
use crate::socket::{AgentSocket, Event};
use crate::stats::{self, round3};
use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `popup-rate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway and its admin token.
    #[command(flatten)]
    pub gateway: admin::Gateway,
    /// Agent sockets held open (one agent each); popups go to them in turn.
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    /// Popups per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Seconds sent before the measured phase (not recorded).
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Leads the callers cycle over.
    #[arg(long, default_value_t = 100)]
    pub leads: usize,
    /// Keep-alive HTTP connections to the gateway.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// How long after the last popup was due a frame may still come (ms).
    #[arg(long, default_value_t = 5000)]
    pub frame_timeout_ms: u64,
    /// The gateway's pid: report its CPU share and memory too.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Also write every measured popup as a CSV row to this file (when it was sent, in
    /// Unix milliseconds, and its round trip), to line slow popups up with what the
    /// gateway was doing then.
    #[arg(long)]
    pub samples_csv: Option<std::path::PathBuf>,
}

/// A popup in flight.
#[derive(Clone, Copy)]
struct Flight {
    /// When it was due.
    due: Instant,
    /// When its POST was handed to the HTTP client (set by its task).
    sent: Option<Instant>,
    /// Whether it counts (not warm-up).
    measured: bool,
}

/// Popups in flight by call session id.
type InFlight = Arc<Mutex<HashMap<String, Flight>>>;

/// Round trips of measured popups.
#[derive(Default)]
struct Seen {
    /// From the POST being sent to the frame being read.
    rtt: Vec<Duration>,
    /// From the popup being due to the frame being read (includes the load tool's
    /// own lateness in sending).
    from_due: Vec<Duration>,
    /// When each measured popup was sent, beside `rtt`.
    sent: Vec<Instant>,
    unexpected: usize,
}

/// CPU time counters from /proc/stat (all cores) or /proc/<pid>/stat, in ticks.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    busy: u64,
    total: u64,
}

fn machine_cpu() -> Cpu {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Cpu::default();
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Cpu::default();
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait are not busy
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Cpu {
        busy: total.saturating_sub(idle),
        total,
    }
}

/// utime + stime of `pid`, in ticks.
fn process_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // fields after the command name, which is in parentheses and may hold spaces
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// Writes one CSV row per popup: when it was sent (Unix ms) and its round trip (ms).
fn write_samples(
    path: &std::path::Path,
    sent: &[Instant],
    rtt: &[Duration],
) -> std::io::Result<()> {
    use std::io::Write;
    // an Instant has no epoch: anchor both clocks at one moment
    let (now, unix_now) = (Instant::now(), std::time::SystemTime::now());
    let unix_ms = |at: Instant| {
        let unix = unix_now - now.saturating_duration_since(at);
        unix.duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "sent_unix_ms,rtt_ms")?;
    for (at, rtt) in sent.iter().zip(rtt) {
        writeln!(out, "{:.3},{:.3}", unix_ms(*at), stats::ms(*rtt))?;
    }
    out.flush()
}

/// Runs `popup-rate` and prints its table and JSON line.
///
/// # Errors
/// Bad options, a failed setup or sockets that failed to open.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.sockets == 0 || args.leads == 0 || args.connections == 0 {
        bail!("--sockets, --leads and --connections must be at least 1");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    let base = admin::base_url(&args.gateway.url);
    let ws = admin::ws_url(&base)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.connections)
        .tcp_nodelay(true)
        .build()?;
    let admin = AdminClient::new(client.clone(), &base, &args.gateway.admin_token);
    let run = admin::run_nonce();

    let setup = Instant::now();
    let (team, connector) = admin.bench_connector("rate", run).await?;
    let agents = admin.create_agents(run, args.sockets, &team).await?;
    let leads = Arc::new(admin.create_leads(run, args.leads).await?);
    let sockets: Vec<AgentSocket> = stream::iter(agents.iter())
        .map(|a| AgentSocket::connect(&ws, &a.token, Duration::from_secs(30)))
        .buffered(64)
        .try_collect()
        .await
        .context("opening the agent sockets")?;
    let popup_url = connector.popup_url(&base)?;
    let setup = setup.elapsed();

    // every socket's popup frames go to one collector
    let in_flight: InFlight = Arc::new(Mutex::new(HashMap::new()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut readers = Vec::new();
    for s in sockets {
        let in_flight = in_flight.clone();
        let seen = seen.clone();
        readers.push(tokio::spawn(async move {
            // the whole socket moves here: its command sender keeps its task reading
            let mut s = s;
            while let Some(ev) = s.events.recv().await {
                match ev {
                    Event::Popup {
                        call_session_id,
                        at,
                        ..
                    } => {
                        let flight = in_flight
                            .lock()
                            .ok()
                            .and_then(|mut m| m.remove(&call_session_id));
                        if let Ok(mut seen) = seen.lock() {
                            match flight {
                                Some(f) if f.measured => {
                                    let sent = f.sent.unwrap_or(f.due);
                                    seen.rtt.push(at.saturating_duration_since(sent));
                                    seen.from_due.push(at.saturating_duration_since(f.due));
                                    seen.sent.push(sent);
                                }
                                Some(_) => {}
                                None => seen.unexpected += 1,
                            }
                        }
                    }
                    Event::Closed { code, reason } => {
                        eprintln!("a socket closed (code {code:?}: {reason})");
                        return;
                    }
                    Event::Pong { .. } | Event::Other { .. } => {}
                }
            }
        }));
    }

    let warmup = (args.rate * args.warmup_secs as f64).round() as usize;
    let measured = (args.rate * args.secs as f64).round() as usize;
    let total = warmup + measured;
    let http_errors = Arc::new(Mutex::new((0usize, Vec::<String>::new())));
    let agents = Arc::new(agents);
    let start = Instant::now() + Duration::from_millis(100);
    let mut late_sends = 0usize;
    let mut cpu0 = (Cpu::default(), 0u64, Instant::now());
    let mut senders = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        if i == warmup {
            cpu0 = (
                machine_cpu(),
                args.gateway_pid.map_or(0, process_ticks),
                Instant::now(),
            );
        }
        if Instant::now().saturating_duration_since(due) > Duration::from_millis(1) {
            late_sends += 1;
        }
        let agent = &agents[i % agents.len()];
        let session = format!("rate-{run:016x}-{i}");
        let body = json!({
            "SourceNumber": leads[i % leads.len()],
            "DestinationNumber": agent.extension,
            "Direction": "Inbound",
            "CallSessionId": session,
        })
        .to_string();
        if let Ok(mut m) = in_flight.lock() {
            let flight = Flight {
                due,
                sent: None,
                measured: i >= warmup,
            };
            m.insert(session.clone(), flight);
        }
        let req = client
            .post(popup_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let errors = http_errors.clone();
        let flights = in_flight.clone();
        senders.push(tokio::spawn(async move {
            if let Some(f) = flights
                .lock()
                .ok()
                .as_mut()
                .and_then(|m| m.get_mut(&session))
            {
                f.sent = Some(Instant::now());
            }
            let problem = match req.send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("{session}: HTTP {}", r.status())),
                // the URL carries the connector's keys: never print it
                Err(e) => Some(format!("{session}: {}", e.without_url())),
            };
            if let (Some(p), Ok(mut e)) = (problem, errors.lock()) {
                e.0 += 1;
                if e.1.len() < 5 {
                    e.1.push(p);
                }
            }
        }));
    }
    let last_due = start + Duration::from_secs_f64((total.max(1) - 1) as f64 / args.rate);
    for s in senders {
        let _ = s.await;
    }
    // wait for the frames still in flight, up to the timeout
    let deadline = last_due + Duration::from_millis(args.frame_timeout_ms);
    while Instant::now() < deadline && in_flight.lock().map(|m| !m.is_empty()).unwrap_or(false) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end = Instant::now().min(last_due + Duration::from_millis(args.frame_timeout_ms));
    let cpu1 = machine_cpu();
    let gw1 = args.gateway_pid.map_or(0, process_ticks);
    let wall = end
        .saturating_duration_since(cpu0.2)
        .max(Duration::from_millis(1));
    let busy = if cpu1.total > cpu0.0.total {
        (cpu1.busy - cpu0.0.busy) as f64 / (cpu1.total - cpu0.0.total) as f64
    } else {
        0.0
    };
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let gateway_share = args
        .gateway_pid
        .map(|_| (gw1.saturating_sub(cpu0.1)) as f64 / ticks_per_sec / wall.as_secs_f64() / cores);
    let gateway_rss_kib = args
        .gateway_pid
        .and_then(|p| crate::idle::vm_rss_kib(p).ok());

    let lost_measured = in_flight
        .lock()
        .map(|m| m.values().filter(|f| f.measured).count())
        .unwrap_or(0);
    for r in readers {
        r.abort();
    }
    let (rtt, from_due, sent, unexpected) = match seen.lock() {
        Ok(mut s) => (
            std::mem::take(&mut s.rtt),
            std::mem::take(&mut s.from_due),
            std::mem::take(&mut s.sent),
            s.unexpected,
        ),
        Err(_) => (Vec::new(), Vec::new(), Vec::new(), 0),
    };
    if let Some(path) = &args.samples_csv {
        write_samples(path, &sent, &rtt)
            .with_context(|| format!("writing the samples to {}", path.display()))?;
    }
    let (errors, error_samples) = http_errors
        .lock()
        .map(|e| (e.0, e.1.clone()))
        .unwrap_or_default();
    let received = rtt.len();
    let summary = stats::summarize(rtt);
    let from_due = stats::summarize(from_due);

    println!(
        "popup-rate: {measured} measured popups at {} /s over {} sockets ({} warm-up, {} leads, setup {:.1} s)",
        args.rate,
        args.sockets,
        warmup,
        args.leads,
        setup.as_secs_f64()
    );
    println!("{}", stats::tail_header());
    println!("{}", stats::tail_row("popup round trip", summary));
    println!("{}", stats::tail_row("  from when it was due", from_due));
    println!(
        "checks                   received={received} lost={lost_measured} http_errors={errors} unexpected_frames={unexpected} late_sends={late_sends}"
    );
    println!(
        "machine busy             {:.1} % of {} cores{}",
        busy * 100.0,
        cores,
        gateway_share.map_or(String::new(), |g| format!(
            "; gateway {:.1} % of the machine",
            g * 100.0
        ))
    );
    if let Some(rss) = gateway_rss_kib {
        println!("gateway rss              {rss} KiB");
    }
    for e in &error_samples {
        println!("error                    {e}");
    }
    let line = json!({
        "bench": "popup-rate",
        "rate_per_s": args.rate,
        "sockets": args.sockets,
        "measured": measured,
        "warmup": warmup,
        "leads": args.leads,
        "rtt_ms": stats::json_or_null(summary),
        "from_due_ms": stats::json_or_null(from_due),
        "received": received,
        "lost": lost_measured,
        "http_errors": errors,
        "unexpected_frames": unexpected,
        "late_sends": late_sends,
        "machine_busy": round3(busy),
        "gateway_cpu_share": gateway_share.map(round3),
        "gateway_rss_kib": gateway_rss_kib,
    });
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_one_row_per_popup_with_its_send_time_and_round_trip() {
        let dir = std::env::temp_dir().join(format!("loadgen-samples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("samples.csv");
        let now = Instant::now();
        let sent = [now - Duration::from_secs(2), now - Duration::from_secs(1)];
        let rtt = [Duration::from_micros(1500), Duration::from_micros(250)];
        write_samples(&path, &sent, &rtt).expect("written");
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::remove_dir_all(&dir).ok();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "sent_unix_ms,rtt_ms");
        let row = |i: usize| {
            let (at, rtt) = lines[i].split_once(',').expect("two columns");
            (at.parse::<f64>().expect("a time"), rtt.to_owned())
        };
        let ((first, rtt1), (second, rtt2)) = (row(1), row(2));
        assert_eq!((rtt1.as_str(), rtt2.as_str()), ("1.500", "0.250"));
        assert!(
            (second - first - 1000.0).abs() < 1.0,
            "{first} then {second}"
        );
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
            * 1000.0;
        assert!(
            (unix_now - first - 2000.0).abs() < 1000.0,
            "{first} is not 2 s ago"
        );
    }
}
