//! `call-log`: call-log ingestion (`POST /v2/Telephony.svc/LogCall`) through the whole
//! gateway.
//!
//! Setup: one team, one connector bound to it, one agent (its extension is every log's
//! `DestinationNumber`, so the gateway records the agent on each activity) and `--leads`
//! leads with distinct numbers. Then `--concurrency` workers start together and each
//! sends call logs one at a time (one in flight per worker), with a unique
//! `CallSessionId` and a caller cycling over the leads, until `--count` logs were sent
//! in total or `--duration-secs` passed. With `--duplicates-pct P`, P % of the logs
//! repeat a session the same worker already had accepted (the gateway must answer
//! `Duplicate: true` and update the same activity). A log's latency runs from just
//! before the POST is sent to the end of the response body; the gateway commits each
//! log to SQLite before it answers. Afterwards the connector's activities are counted
//! through the admin API and must equal the distinct sessions sent.

use crate::admin::{self, AdminClient, Connector};
use crate::stats::{self, round3};
use anyhow::{Context, bail};
use futures_util::future::try_join_all;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// The company line every log is shown on (mandatory, must be a valid number).
const DISPLAY_NUMBER: &str = "+918069000000";
/// Logs sent when neither `--count` nor `--duration-secs` is given.
const DEFAULT_COUNT: usize = 1000;

/// Options of `call-log`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway and its admin token.
    #[command(flatten)]
    pub gateway: admin::Gateway,
    /// Logs to send in total, shared by the workers (default 1000 unless
    /// --duration-secs is given; with both, whichever ends first).
    #[arg(long)]
    pub count: Option<usize>,
    /// Sustained run: keep sending for this many seconds.
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Sequential workers running in parallel (one log in flight each).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Leads the callers cycle over.
    #[arg(long, default_value_t = 100)]
    pub leads: usize,
    /// Percentage (0-100) of logs that repeat an earlier accepted session.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub duplicates_pct: u8,
}

/// What one worker saw.
#[derive(Debug, Default)]
struct WorkerReport {
    /// Latencies of the 200 `Success` answers.
    latency: Vec<Duration>,
    /// Logs sent (answered or not).
    sent: usize,
    /// 200 `Success` answers.
    ok: usize,
    /// Logs with a session not sent before.
    fresh_sent: usize,
    /// Logs repeating an accepted session.
    repeats_sent: usize,
    /// Answers with `Duplicate: true`.
    duplicates: usize,
    /// Answers whose `Duplicate` differs from whether the session was a repeat.
    duplicate_mismatches: usize,
    /// Answers with `LeadCreated: true` (every caller is an existing lead).
    leads_created: usize,
    /// Non-200 answers by status code.
    non_200: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection errors, timeouts).
    transport_errors: usize,
    /// 200 answers that are not `{"Status":"Success", "Message":{..}}`.
    bad_answers: usize,
    /// First few error descriptions.
    errors: Vec<String>,
    /// When the worker's last log was answered.
    end: Option<Instant>,
}

impl WorkerReport {
    fn note(&mut self, e: String) {
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }

    fn merge(&mut self, r: Self) {
        self.latency.extend(r.latency);
        self.sent += r.sent;
        self.ok += r.ok;
        self.fresh_sent += r.fresh_sent;
        self.repeats_sent += r.repeats_sent;
        self.duplicates += r.duplicates;
        self.duplicate_mismatches += r.duplicate_mismatches;
        self.leads_created += r.leads_created;
        for (code, n) in r.non_200 {
            *self.non_200.entry(code).or_default() += n;
        }
        self.transport_errors += r.transport_errors;
        self.bad_answers += r.bad_answers;
        for e in r.errors {
            self.note(e);
        }
        self.end = self.end.max(r.end);
    }

    fn non_200_total(&self) -> usize {
        self.non_200.values().sum()
    }
}

/// Whether log number `n` (0-based, over all workers) repeats a session: exactly
/// `pct` of every 100 consecutive logs, spread evenly.
fn is_repeat(n: usize, pct: u8) -> bool {
    let p = usize::from(pct);
    (n + 1) * p / 100 > n * p / 100
}

/// A small deterministic generator (splitmix64) picking which session to repeat (and,
/// in `call-route`, which number to ask for).
#[derive(Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        // the modulo keeps the value below n, which fits usize
        #[allow(clippy::cast_possible_truncation)]
        let i = (self.next() % n as u64) as usize;
        i
    }
}

/// One worker: its keys, the agent's extension and the shared log counter.
struct Worker {
    index: usize,
    run: u64,
    client: reqwest::Client,
    url: reqwest::Url,
    connector: Connector,
    extension: String,
    leads: Arc<Vec<String>>,
    duplicates_pct: u8,
    /// The next log number to claim (all workers).
    next: Arc<AtomicUsize>,
    limit: Option<usize>,
    duration: Option<Duration>,
}

/// A session this worker had accepted: its id and caller, for repeats.
#[derive(Debug, Clone)]
struct Session {
    id: String,
    lead: usize,
}

impl Worker {
    fn body(&self, n: usize, session: &Session, repeat: bool) -> String {
        json!({
            "SourceNumber": self.leads[session.lead],
            "DestinationNumber": self.extension,
            "DisplayNumber": DISPLAY_NUMBER,
            "StartTime": "2017-07-07 18:26:38",
            "EndTime": "2017-07-07 18:28:38",
            "CallDuration": 120,
            "Status": "Answered",
            "Direction": "Inbound",
            "CallSessionId": session.id,
            "CallNotes": if repeat {
                format!("bench log {n} (repeat)")
            } else {
                format!("bench log {n}")
            },
            "ResourceURL": format!("https://rec.example/{}.mp3", session.id),
        })
        .to_string()
    }

    /// Sends logs until the count is used up or the time is over.
    async fn run(self, barrier: Arc<Barrier>) -> anyhow::Result<WorkerReport> {
        let mut rng = Rng(self.run ^ (self.index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let mut accepted: Vec<Session> = Vec::new();
        let mut fresh = 0usize;
        let mut report = WorkerReport::default();
        barrier.wait().await;
        let deadline = self.duration.map(|d| Instant::now() + d);
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if self.limit.is_some_and(|l| n >= l) {
                break;
            }
            let repeat = !accepted.is_empty() && is_repeat(n, self.duplicates_pct);
            let session = if repeat {
                accepted[rng.below(accepted.len())].clone()
            } else {
                let s = Session {
                    id: format!("bench-log-{:016x}-{}-{fresh}", self.run, self.index),
                    lead: n % self.leads.len(),
                };
                fresh += 1;
                s
            };
            let req = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("x-LSQ-AccessKey", &self.connector.access_key)
                .header("x-LSQ-SecretKey", &self.connector.secret_key)
                .body(self.body(n, &session, repeat))
                .build()?;
            report.sent += 1;
            if repeat {
                report.repeats_sent += 1;
            } else {
                report.fresh_sent += 1;
            }
            let t0 = Instant::now();
            let answer = async {
                let resp = self.client.execute(req).await?;
                let status = resp.status();
                let bytes = resp.bytes().await?;
                anyhow::Ok((status, bytes))
            }
            .await;
            let latency = t0.elapsed();
            let (status, bytes) = match answer {
                Ok(a) => a,
                Err(e) => {
                    report.transport_errors += 1;
                    report.note(format!("{}: {e:#}", session.id));
                    continue;
                }
            };
            let text = || String::from_utf8_lossy(&bytes).into_owned();
            if status != reqwest::StatusCode::OK {
                *report.non_200.entry(status.as_u16()).or_default() += 1;
                report.note(format!("{}: {status} {}", session.id, text()));
                continue;
            }
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let message = &v["Message"];
            let (Some(duplicate), Some(lead_created)) = (
                message["Duplicate"].as_bool(),
                message["LeadCreated"].as_bool(),
            ) else {
                report.bad_answers += 1;
                report.note(format!("{}: unexpected answer {}", session.id, text()));
                continue;
            };
            if v["Status"] != "Success" {
                report.bad_answers += 1;
                report.note(format!("{}: unexpected answer {}", session.id, text()));
                continue;
            }
            report.ok += 1;
            report.latency.push(latency);
            report.duplicates += usize::from(duplicate);
            report.leads_created += usize::from(lead_created);
            if duplicate != repeat {
                report.duplicate_mismatches += 1;
                report.note(format!(
                    "{}: Duplicate={duplicate} for a {} session",
                    session.id,
                    if repeat { "repeated" } else { "new" }
                ));
            }
            if !repeat {
                accepted.push(session);
            }
        }
        report.end = Some(Instant::now());
        Ok(report)
    }
}

/// Runs `call-log` and prints its table and JSON line.
///
/// # Errors
/// Bad options, a failed setup, failed logs, or a stored count that differs from the
/// sessions sent.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.leads == 0 {
        bail!("--concurrency and --leads must be at least 1");
    }
    if args.count == Some(0) || args.duration_secs == Some(0) {
        bail!("--count and --duration-secs must be at least 1");
    }
    let limit = match (args.count, args.duration_secs) {
        (None, None) => Some(DEFAULT_COUNT),
        (c, _) => c,
    };
    let duration = args.duration_secs.map(Duration::from_secs);
    let base = admin::base_url(&args.gateway.url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency.max(8))
        .build()?;
    let admin = AdminClient::new(client.clone(), &base, &args.gateway.admin_token);
    let run = admin::run_nonce();

    let setup = Instant::now();
    let (team, connector) = admin.bench_connector("bench-log", run).await?;
    let agent = admin
        .create_agent(run, 0, &team)
        .await
        .context("creating the agent")?;
    let leads = Arc::new(admin.create_leads(run, args.leads).await?);
    let url = reqwest::Url::parse(&format!("{base}/v2/Telephony.svc/LogCall"))?;
    let setup = setup.elapsed();

    let barrier = Arc::new(Barrier::new(args.concurrency + 1));
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|index| {
            let worker = Worker {
                index,
                run,
                client: client.clone(),
                url: url.clone(),
                connector: connector.clone(),
                extension: agent.extension.clone(),
                leads: leads.clone(),
                duplicates_pct: args.duplicates_pct,
                next: next.clone(),
                limit,
                duration,
            };
            tokio::spawn(worker.run(barrier.clone()))
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let reports = try_join_all(tasks).await.context("a worker panicked")?;
    let mut all = WorkerReport::default();
    for r in reports {
        all.merge(r?);
    }
    let wall = all.end.unwrap_or(start).saturating_duration_since(start);

    let verify = Instant::now();
    let stored = admin
        .count_activities(&connector.id)
        .await
        .context("counting the stored activities")?;
    let verify = verify.elapsed();
    let stored_ok = stored.activities == all.fresh_sent;

    let latency = stats::summarize(std::mem::take(&mut all.latency));
    // log counts are far below f64's exact integer range
    #[allow(clippy::cast_precision_loss)]
    let throughput = if wall.is_zero() {
        0.0
    } else {
        all.ok as f64 / wall.as_secs_f64()
    };
    let non_200 = all.non_200_total();
    let non_200_by_status: serde_json::Map<String, Value> = all
        .non_200
        .iter()
        .map(|(code, n)| (code.to_string(), json!(n)))
        .collect();

    let mode = match (limit, args.duration_secs) {
        (Some(c), Some(s)) => format!("{c} logs or {s} s"),
        (Some(c), None) => format!("{c} logs"),
        (None, Some(s)) => format!("{s} s sustained"),
        (None, None) => String::from("?"),
    };
    println!(
        "call-log: {mode}, concurrency {}, {} leads, {} % repeats (setup {:.1} s)",
        args.concurrency,
        args.leads,
        args.duplicates_pct,
        setup.as_secs_f64()
    );
    println!("{}", stats::header());
    println!("{}", stats::row("call log response", latency));
    println!(
        "throughput           {} logs in {:.3} s = {throughput:.1} logs/s ({} sent: {} new sessions, {} repeats)",
        all.ok,
        wall.as_secs_f64(),
        all.sent,
        all.fresh_sent,
        all.repeats_sent
    );
    println!(
        "checks               non_200={non_200} transport_errors={} bad_answers={} duplicates={} duplicate_mismatches={} leads_created={}",
        all.transport_errors,
        all.bad_answers,
        all.duplicates,
        all.duplicate_mismatches,
        all.leads_created
    );
    for (code, n) in &all.non_200 {
        println!("non-200              {code}: {n}");
    }
    println!(
        "stored               {} activities of the connector ({} distinct sessions) for {} sessions sent: stored_ok={stored_ok} (read {} activities in {} pages, {:.2} s)",
        stored.activities,
        stored.distinct_sessions,
        all.fresh_sent,
        stored.scanned,
        stored.pages,
        verify.as_secs_f64()
    );
    for e in &all.errors {
        println!("error                {e}");
    }
    let line = json!({
        "bench": "call-log",
        "concurrency": args.concurrency,
        "count": limit,
        "duration_secs": args.duration_secs,
        "leads": args.leads,
        "duplicates_pct": args.duplicates_pct,
        "latency_ms": stats::json_or_null(latency),
        "wall_s": round3(wall.as_secs_f64()),
        "throughput_per_s": round3(throughput),
        "total": all.sent,
        "ok": all.ok,
        "sessions": all.fresh_sent,
        "repeats": all.repeats_sent,
        "non_200": non_200,
        "non_200_by_status": non_200_by_status,
        "transport_errors": all.transport_errors,
        "bad_answers": all.bad_answers,
        "duplicates": all.duplicates,
        "duplicate_mismatches": all.duplicate_mismatches,
        "leads_created": all.leads_created,
        "stored": stored.activities,
        "stored_distinct_sessions": stored.distinct_sessions,
        "stored_ok": stored_ok,
    });
    println!("{line}");
    let failed = all.sent - all.ok;
    if failed > 0 {
        bail!("{failed} of {} call logs failed", all.sent);
    }
    if all.duplicate_mismatches > 0 {
        bail!(
            "{} answers had the wrong `Duplicate` flag",
            all.duplicate_mismatches
        );
    }
    if !stored_ok {
        bail!(
            "the gateway stored {} activities for {} sessions",
            stored.activities,
            all.fresh_sent
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_the_asked_share_spread_evenly() {
        for pct in [0u8, 1, 10, 33, 50, 100] {
            let repeats = (0..1000).filter(|&n| is_repeat(n, pct)).count();
            assert_eq!(repeats, usize::from(pct) * 10, "pct {pct}");
        }
        assert!(!(0..10_000).any(|n| is_repeat(n, 0)));
        let tens: Vec<usize> = (0..30).filter(|&n| is_repeat(n, 10)).collect();
        assert_eq!(tens, vec![9, 19, 29]);
    }

    #[test]
    fn the_generator_stays_below_its_bound() {
        let mut r = Rng(7);
        assert!((0..1000).all(|_| r.below(3) < 3));
        assert_eq!(r.below(1), 0);
    }
}
