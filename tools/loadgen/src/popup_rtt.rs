//! `popup-rtt`: the popup round trip through the whole gateway.
//!
//! Setup: one team, one connector bound to it, `--concurrency` agents (one open,
//! authenticated socket each) and `--leads` leads with distinct numbers. Then every
//! sender sends its popups one at a time (one in flight) to its own agent, with a
//! unique `CallSessionId` and a caller cycling over the leads. A popup's round trip runs
//! from just before the POST is sent to the moment the agent's socket reads the `popup`
//! frame carrying that call session id; the HTTP response may come before or after
//! the frame. The first `--warmup` popups of each sender are not recorded; all senders
//! then start the measured phase together, and the throughput is the measured popups
//! divided by the wall time of that phase.

use crate::admin::{self, AdminClient, Agent};
use crate::socket::{AgentSocket, Event};
use crate::stats::{self, round3};
use anyhow::{Context, bail};
use futures_util::future::try_join_all;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// Options of `popup-rtt`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway and its admin token.
    #[command(flatten)]
    pub gateway: admin::Gateway,
    /// Base URL of the node the agents' sockets connect to (default: --url). With
    /// another node of a cluster, popups cross nodes (posted to --url, delivered over
    /// Redis by the socket's node).
    #[arg(long)]
    pub socket_url: Option<String>,
    /// Measured popups in total (split evenly over the senders).
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Unrecorded popups each sender sends first.
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
    /// Leads the callers cycle over.
    #[arg(long, default_value_t = 100)]
    pub leads: usize,
    /// Sequential senders running in parallel, each against its own agent.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// How long to wait for a popup's frame before counting it missing (ms).
    #[arg(long, default_value_t = 5000)]
    pub frame_timeout_ms: u64,
    /// Also write every measured popup as CSV (`sender,seq,lead,rtt_us,http_us,frame_bytes`) here.
    #[arg(long)]
    pub samples_csv: Option<std::path::PathBuf>,
}

/// What one sender saw in its measured phase.
#[derive(Debug, Default)]
struct SenderReport {
    /// Every measured popup that completed.
    samples: Vec<Sample>,
    rtt: Vec<Duration>,
    http: Vec<Duration>,
    /// Frames read before their HTTP response.
    frame_first: usize,
    /// Transport errors, non-200 answers, or answers other than Success/Delivered 1.
    http_errors: usize,
    /// Popups whose frame never came.
    missing_frames: usize,
    /// Frames whose `popup.id` differs from the answer's `Id`.
    id_mismatches: usize,
    /// Popup frames for no popup in flight (late or foreign).
    unexpected_frames: usize,
    /// Other frames read (not popup, pong).
    other_frames: usize,
    /// First few error descriptions.
    errors: Vec<String>,
    /// When the measured phase ended.
    end: Option<Instant>,
}

impl SenderReport {
    fn note(&mut self, e: String) {
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }
}

/// One measured popup, for `--samples-csv`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    sender: usize,
    seq: usize,
    lead: usize,
    rtt: Duration,
    http: Duration,
    bytes: usize,
}

/// One sender: its agent, socket and keys.
struct Sender {
    index: usize,
    run: u64,
    client: reqwest::Client,
    popup_url: reqwest::Url,
    agent: Agent,
    socket: AgentSocket,
    leads: Arc<Vec<String>>,
    frame_timeout: Duration,
}

/// How one popup went.
enum Outcome {
    /// Round trip, HTTP time, whether the frame came first.
    Ok {
        rtt: Duration,
        http: Duration,
        frame_first: bool,
        id_mismatch: bool,
        bytes: usize,
    },
    /// The POST failed; no frame is awaited.
    HttpError(String),
    /// The answer came but the frame did not.
    Missing(String),
}

impl Sender {
    /// The lead (index into `leads`) popup `seq` calls from.
    fn lead_of(&self, seq: usize) -> usize {
        (seq + self.index) % self.leads.len()
    }

    fn body(&self, seq: usize) -> (String, String) {
        let call_session_id = format!("bench-{:016x}-{}-{seq}", self.run, self.index);
        let lead = &self.leads[self.lead_of(seq)];
        let body = json!({
            "SourceNumber": lead,
            "DestinationNumber": self.agent.extension,
            "Direction": "Inbound",
            "CallSessionId": call_session_id,
        })
        .to_string();
        (call_session_id, body)
    }

    /// Sends popup `seq` and waits for its frame.
    async fn one(&mut self, seq: usize, report: &mut SenderReport) -> anyhow::Result<Outcome> {
        let (call_session_id, body) = self.body(seq);
        let req = self
            .client
            .post(self.popup_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .build()?;
        let t0 = Instant::now();
        // the URL carries the connector's keys: errors are printed without it
        let answer = async {
            let resp = self.client.execute(req).await?;
            let status = resp.status();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        }
        .await
        .map_err(reqwest::Error::without_url);
        let http = t0.elapsed();
        let (status, bytes) = match answer {
            Ok(a) => a,
            Err(e) => return Ok(Outcome::HttpError(format!("{call_session_id}: {e:#}"))),
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        if status != reqwest::StatusCode::OK || v["Status"] != "Success" {
            return Ok(Outcome::HttpError(format!(
                "{call_session_id}: {status} {}",
                text()
            )));
        }
        if v["Message"]["Delivered"] != 1 {
            return Ok(Outcome::HttpError(format!(
                "{call_session_id}: delivered to {} sockets: {}",
                v["Message"]["Delivered"],
                text()
            )));
        }
        let answer_id = v["Message"]["Id"].as_str().unwrap_or_default().to_owned();
        let deadline = tokio::time::Instant::from_std(t0 + self.frame_timeout);
        loop {
            match tokio::time::timeout_at(deadline, self.socket.events.recv()).await {
                Err(_) => {
                    return Ok(Outcome::Missing(format!(
                        "{call_session_id}: no popup frame within {:?}",
                        self.frame_timeout
                    )));
                }
                Ok(None) => bail!("sender {}: the socket task ended", self.index),
                Ok(Some(Event::Closed { code, reason })) => bail!(
                    "sender {}: the socket closed (code {code:?}: {reason})",
                    self.index
                ),
                Ok(Some(Event::Popup {
                    call_session_id: got,
                    popup_id,
                    bytes,
                    at,
                })) => {
                    if got == call_session_id {
                        let rtt = at.saturating_duration_since(t0);
                        return Ok(Outcome::Ok {
                            rtt,
                            http,
                            frame_first: rtt < http,
                            id_mismatch: popup_id != answer_id,
                            bytes,
                        });
                    }
                    report.unexpected_frames += 1;
                }
                Ok(Some(Event::Pong { .. })) => {}
                Ok(Some(Event::Other { kind })) => {
                    report.other_frames += 1;
                    report.note(format!("sender {}: unexpected `{kind}` frame", self.index));
                }
            }
        }
    }

    /// Warm-up, the start barrier, then the measured popups.
    async fn run(
        mut self,
        warmup: usize,
        count: usize,
        barrier: Arc<Barrier>,
    ) -> anyhow::Result<(SenderReport, AgentSocket)> {
        let mut scratch = SenderReport::default();
        let mut warm = Ok(());
        for seq in 0..warmup {
            match self.one(seq, &mut scratch).await {
                Ok(Outcome::Ok { .. }) => {}
                Ok(Outcome::HttpError(e) | Outcome::Missing(e)) => {
                    warm = Err(anyhow::anyhow!(
                        "sender {}: warm-up popup failed: {e}",
                        self.index
                    ));
                    break;
                }
                Err(e) => {
                    warm = Err(e);
                    break;
                }
            }
        }
        // a failed sender still meets the others at the start line, or they (and the
        // main task) would wait there for ever
        barrier.wait().await;
        warm?;
        let mut report = SenderReport::default();
        for seq in warmup..warmup + count {
            match self.one(seq, &mut report).await? {
                Outcome::Ok {
                    rtt,
                    http,
                    frame_first,
                    id_mismatch,
                    bytes,
                } => {
                    report.samples.push(Sample {
                        sender: self.index,
                        seq,
                        lead: self.lead_of(seq),
                        rtt,
                        http,
                        bytes,
                    });
                    report.rtt.push(rtt);
                    report.http.push(http);
                    report.frame_first += usize::from(frame_first);
                    report.id_mismatches += usize::from(id_mismatch);
                }
                Outcome::HttpError(e) => {
                    report.http_errors += 1;
                    report.note(e);
                }
                Outcome::Missing(e) => {
                    report.missing_frames += 1;
                    report.note(e);
                }
            }
        }
        report.end = Some(Instant::now());
        Ok((report, self.socket))
    }
}

/// Runs `popup-rtt` and prints its table and JSON line.
///
/// # Errors
/// Bad options, a failed setup, a socket that closed, or a failed warm-up.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.leads == 0 {
        bail!("--concurrency and --leads must be at least 1");
    }
    if args.count < args.concurrency {
        bail!("--count must be at least --concurrency");
    }
    let base = admin::base_url(&args.gateway.url);
    let ws = admin::ws_url(&admin::base_url(
        args.socket_url.as_deref().unwrap_or(&args.gateway.url),
    ))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency.max(8))
        .build()?;
    let admin = AdminClient::new(client.clone(), &base, &args.gateway.admin_token);
    let run = admin::run_nonce();

    let setup = Instant::now();
    let (team, connector) = admin.bench_connector("bench", run).await?;
    let agents = admin.create_agents(run, args.concurrency, &team).await?;
    let leads = Arc::new(admin.create_leads(run, args.leads).await?);
    let popup_url = connector.popup_url(&base)?;
    let sockets = try_join_all(
        agents
            .iter()
            .map(|a| AgentSocket::connect(&ws, &a.token, Duration::from_secs(10))),
    )
    .await
    .context("opening the agent sockets")?;
    let setup = setup.elapsed();

    let barrier = Arc::new(Barrier::new(args.concurrency + 1));
    let per = args.count / args.concurrency;
    let extra = args.count % args.concurrency;
    let mut tasks = Vec::new();
    for (index, (agent, socket)) in agents.into_iter().zip(sockets).enumerate() {
        let sender = Sender {
            index,
            run,
            client: client.clone(),
            popup_url: popup_url.clone(),
            agent,
            socket,
            leads: leads.clone(),
            frame_timeout: Duration::from_millis(args.frame_timeout_ms),
        };
        let count = per + usize::from(index < extra);
        tasks.push(tokio::spawn(sender.run(
            args.warmup,
            count,
            barrier.clone(),
        )));
    }
    barrier.wait().await;
    let start = Instant::now();

    let mut reports = Vec::new();
    let mut sockets = Vec::new();
    for t in tasks {
        let (r, s) = t.await.context("a sender panicked")??;
        reports.push(r);
        sockets.push(s);
    }
    let end = reports.iter().filter_map(|r| r.end).max().unwrap_or(start);
    let wall = end.saturating_duration_since(start);
    for s in sockets {
        s.close().await;
    }

    let mut all = SenderReport::default();
    for r in reports {
        all.samples.extend(r.samples);
        all.rtt.extend(r.rtt);
        all.http.extend(r.http);
        all.frame_first += r.frame_first;
        all.http_errors += r.http_errors;
        all.missing_frames += r.missing_frames;
        all.id_mismatches += r.id_mismatches;
        all.unexpected_frames += r.unexpected_frames;
        all.other_frames += r.other_frames;
        for e in r.errors {
            all.note(e);
        }
    }
    if let Some(path) = &args.samples_csv {
        write_samples(path, &all.samples)?;
    }
    let ok = all.rtt.len();
    let rtt = stats::summarize(all.rtt);
    let http = stats::summarize(all.http);
    // popup counts are far below f64's exact integer range
    #[allow(clippy::cast_precision_loss)]
    let throughput = if wall.is_zero() {
        0.0
    } else {
        ok as f64 / wall.as_secs_f64()
    };

    println!(
        "popup-rtt: {} measured popups, concurrency {}, warm-up {} per sender, {} leads (setup {:.1} s)",
        args.count,
        args.concurrency,
        args.warmup,
        args.leads,
        setup.as_secs_f64()
    );
    println!("{}", stats::header());
    println!("{}", stats::row("popup round trip", rtt));
    println!("{}", stats::row("http response", http));
    println!(
        "throughput           {ok} popups in {:.3} s = {throughput:.1} popups/s",
        wall.as_secs_f64()
    );
    println!(
        "checks               http_errors={} missing_frames={} id_mismatches={} unexpected_frames={} other_frames={} frame_before_response={}",
        all.http_errors,
        all.missing_frames,
        all.id_mismatches,
        all.unexpected_frames,
        all.other_frames,
        all.frame_first
    );
    for e in &all.errors {
        println!("error                {e}");
    }
    let line = json!({
        "bench": "popup-rtt",
        "cross_node": args.socket_url.is_some_and(|u| admin::base_url(&u) != base),
        "concurrency": args.concurrency,
        "count": args.count,
        "warmup_per_sender": args.warmup,
        "leads": args.leads,
        "rtt_ms": stats::json_or_null(rtt),
        "http_ms": stats::json_or_null(http),
        "wall_s": round3(wall.as_secs_f64()),
        "throughput_per_s": round3(throughput),
        "ok": ok,
        "http_errors": all.http_errors,
        "missing_frames": all.missing_frames,
        "id_mismatches": all.id_mismatches,
        "unexpected_frames": all.unexpected_frames,
        "other_frames": all.other_frames,
        "frame_before_response": all.frame_first,
    });
    println!("{line}");
    if ok < args.count {
        bail!("{} of {} popups failed", args.count - ok, args.count);
    }
    Ok(())
}

/// Writes one CSV line per sample (with a header) to `path`.
fn write_samples(path: &std::path::Path, samples: &[Sample]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut out = String::from("sender,seq,lead,rtt_us,http_us,frame_bytes\n");
    for s in samples {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            s.sender,
            s.seq,
            s.lead,
            s.rtt.as_micros(),
            s.http.as_micros(),
            s.bytes
        );
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}
