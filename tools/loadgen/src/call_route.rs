//! `route-setup` and `call-route`: call-route latency (`GET
//! /api/v1/telephony/call-route`, SPEC 2.3) against a database holding many leads.
//!
//! The leads are far too many to create through the admin API, so the benchmark comes
//! in two steps with a seeding in between (`scripts/bench-route.sh` does all of it):
//!
//! 1. `route-setup` creates, through the admin API, one team, one connector bound to
//!    it, and one agent of the team with an E.164 number and a provider agent id (the
//!    owner every seeded lead will have; being in a team bound to the connector, the
//!    owner passes the route's "sees the connector" check). It prints one JSON line
//!    `{"connector_id","access_key","secret_key","owner_id"}`.
//! 2. With the gateway stopped, `scripts/seed_leads.py` inserts the leads
//!    (`+91<number-base + i>`, owned by `owner_id`) straight into its SQLite file.
//! 3. With the gateway started again on that database, `call-route` asks for the
//!    owner of random callers: `--concurrency` workers, one request in flight each,
//!    share `--count` measured requests. Known callers are drawn uniformly from the
//!    seeded range; `--unknown-pct` of the requests (spread evenly) ask for a number
//!    just above the range, which no lead holds, and must answer `Match: false,
//!    Reason: NoLead`. Every known caller must answer `Match: true` with the owner's
//!    `OwnerId` (when `--owner-id` is given). A request's latency runs from just
//!    before it is sent to the end of the response body.

use crate::admin::{self, AdminClient};
use crate::call_log::Rng;
use crate::stats::{self, round3};
use anyhow::{Context, bail};
use futures_util::future::try_join_all;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// Smallest 10-digit Indian mobile number (they start with 6, 7, 8 or 9).
const NATIONAL_MIN: u64 = 6_000_000_000;
/// Largest 10-digit national number.
const NATIONAL_MAX: u64 = 9_999_999_999;

/// Options of `route-setup`.
#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    /// The gateway and its admin token.
    #[command(flatten)]
    pub gateway: admin::Gateway,
}

/// Options of `call-route`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Gateway base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// The connector's access key (from `route-setup`).
    #[arg(long)]
    pub access_key: String,
    /// The connector's secret key (from `route-setup`).
    #[arg(long)]
    pub secret_key: String,
    /// The seeded leads' owner (from `route-setup`); every match must name it.
    #[arg(long)]
    pub owner_id: Option<String>,
    /// Measured requests in total, shared by the workers.
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Sequential workers running in parallel (one request in flight each).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Unrecorded requests (known callers) each worker sends first.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// How many numbers were seeded: +91<number-base> .. +91<number-base + numbers - 1>.
    #[arg(long, default_value_t = 1_000_000)]
    pub numbers: u64,
    /// The first seeded national number.
    #[arg(long, default_value_t = 9_000_000_000)]
    pub number_base: u64,
    /// Percentage (0-100) of requests for unknown numbers (just above the seeded range).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub unknown_pct: u8,
}

/// Runs `route-setup`: creates the team, connector and owner and prints their ids and
/// keys as one JSON line.
///
/// # Errors
/// The gateway refused or could not be reached.
pub async fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let base = admin::base_url(&args.gateway.url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let admin = AdminClient::new(client, &base, &args.gateway.admin_token);
    let run = admin::run_nonce();
    let team = admin
        .create_team(&format!("bench-route-{run:016x}"))
        .await
        .context("creating the team")?;
    let connector = admin
        .create_connector(&format!("Bench route {run:016x}"), &team)
        .await
        .context("creating the connector")?;
    let owner = admin
        .create_owner(run, &team, &connector.id)
        .await
        .context("creating the lead owner")?;
    println!(
        "route-setup: team {team}, connector {}, owner {} (number {}, telephony agent id {})",
        connector.id, owner.id, owner.number, owner.telephony_agent_id
    );
    println!(
        "{}",
        json!({
            "connector_id": connector.id,
            "access_key": connector.access_key,
            "secret_key": connector.secret_key,
            "owner_id": owner.id,
        })
    );
    Ok(())
}

/// Whether request number `n` (0-based, over all workers) asks for an unknown number:
/// exactly `pct` of every 100 consecutive requests, spread evenly.
fn is_unknown(n: usize, pct: u8) -> bool {
    let p = usize::from(pct);
    (n + 1) * p / 100 > n * p / 100
}

/// The national numbers asked for: the seeded range and the unknown one above it.
#[derive(Debug, Clone, Copy)]
struct Numbers {
    /// First seeded number.
    base: u64,
    /// Seeded numbers.
    count: u64,
    /// Numbers in the unknown range `base + count ..`.
    unknown: u64,
}

impl Numbers {
    /// Checks the ranges are 10-digit Indian mobiles and leaves room for unknown ones.
    fn new(base: u64, count: u64, unknown_pct: u8) -> anyhow::Result<Self> {
        if count == 0 {
            bail!("--numbers must be at least 1");
        }
        let last = base
            .checked_add(count - 1)
            .filter(|&l| base >= NATIONAL_MIN && l <= NATIONAL_MAX)
            .with_context(|| {
                format!(
                    "--number-base and --numbers must stay within {NATIONAL_MIN}..={NATIONAL_MAX}"
                )
            })?;
        let unknown = count.min(NATIONAL_MAX - last);
        if unknown == 0 && unknown_pct > 0 {
            bail!("no room for unknown numbers above {last}; use --unknown-pct 0");
        }
        Ok(Self {
            base,
            count,
            unknown,
        })
    }

    /// A random seeded number, or one from just above the seeded range.
    fn pick(&self, rng: &mut Rng, unknown: bool) -> u64 {
        // both counts are below 10^10, so they fit usize on the 64-bit targets loadgen
        // runs on, and the index fits u64 back
        #[allow(clippy::cast_possible_truncation)]
        if unknown {
            self.base + self.count + rng.below(self.unknown as usize) as u64
        } else {
            self.base + rng.below(self.count as usize) as u64
        }
    }
}

/// What one worker saw in its measured phase.
#[derive(Debug, Default)]
struct WorkerReport {
    /// Latencies of the 200 answers for seeded callers.
    known: Vec<Duration>,
    /// Latencies of the 200 answers for unknown callers.
    unknown: Vec<Duration>,
    /// Requests sent (answered or not).
    sent: usize,
    /// Requests for seeded callers.
    known_sent: usize,
    /// Requests for unknown callers.
    unknown_sent: usize,
    /// 200 `Success` answers with a `Match` flag.
    ok: usize,
    /// Answers with `Match: true`.
    matched: usize,
    /// Answers with `Match: false`, by `Reason`.
    no_match: BTreeMap<String, usize>,
    /// Seeded callers answered `Match: false`.
    known_no_match: usize,
    /// Unknown callers answered anything but `Match: false, Reason: NoLead`.
    unknown_wrong: usize,
    /// Matches whose `OwnerId` was compared with `--owner-id`.
    owner_checked: usize,
    /// Matches naming another owner (or none).
    owner_mismatches: usize,
    /// Non-200 answers by status code.
    non_200: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection errors, timeouts).
    transport_errors: usize,
    /// 200 answers that are not `{"Status":"Success","Match":bool,..}`.
    bad_answers: usize,
    /// The first match answer, shown as a sample.
    sample: Option<(String, Value)>,
    /// First few error descriptions.
    errors: Vec<String>,
    /// When the worker's last request was answered.
    end: Option<Instant>,
}

impl WorkerReport {
    fn note(&mut self, e: String) {
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }

    fn merge(&mut self, r: Self) {
        self.known.extend(r.known);
        self.unknown.extend(r.unknown);
        self.sent += r.sent;
        self.known_sent += r.known_sent;
        self.unknown_sent += r.unknown_sent;
        self.ok += r.ok;
        self.matched += r.matched;
        for (reason, n) in r.no_match {
            *self.no_match.entry(reason).or_default() += n;
        }
        self.known_no_match += r.known_no_match;
        self.unknown_wrong += r.unknown_wrong;
        self.owner_checked += r.owner_checked;
        self.owner_mismatches += r.owner_mismatches;
        for (code, n) in r.non_200 {
            *self.non_200.entry(code).or_default() += n;
        }
        self.transport_errors += r.transport_errors;
        self.bad_answers += r.bad_answers;
        if self.sample.is_none() {
            self.sample = r.sample;
        }
        for e in r.errors {
            self.note(e);
        }
        self.end = self.end.max(r.end);
    }

    fn non_200_total(&self) -> usize {
        self.non_200.values().sum()
    }

    fn no_match_total(&self) -> usize {
        self.no_match.values().sum()
    }

    /// Requests that did not get the answer they should have.
    fn failed(&self) -> usize {
        self.non_200_total()
            + self.transport_errors
            + self.bad_answers
            + self.known_no_match
            + self.unknown_wrong
            + self.owner_mismatches
    }
}

/// One worker: its keys and the shared request counter.
struct Worker {
    index: usize,
    run: u64,
    client: reqwest::Client,
    /// `<base>/api/v1/telephony/call-route?caller_id=%2B91`: the national number is
    /// appended.
    url_prefix: String,
    access_key: String,
    secret_key: String,
    owner_id: Option<String>,
    numbers: Numbers,
    unknown_pct: u8,
    warmup: usize,
    /// The next measured request number to claim (all workers).
    next: Arc<AtomicUsize>,
    limit: usize,
}

/// How one answer went.
enum Answer {
    /// 200 with a `Match` flag: the latency and the parsed answer.
    Ok(Duration, Value),
    /// Another status, with the body.
    Status(reqwest::StatusCode, String),
    /// 200 but not a route answer.
    Bad(String),
    /// No answer.
    Transport(String),
}

impl Worker {
    /// Asks for the owner of `+91<national>`.
    async fn ask(&self, national: u64) -> Answer {
        let t0 = Instant::now();
        let answer = async {
            let resp = self
                .client
                .get(format!("{}{national}", self.url_prefix))
                .header("x-LSQ-AccessKey", &self.access_key)
                .header("x-LSQ-SecretKey", &self.secret_key)
                .send()
                .await?;
            let status = resp.status();
            let bytes = resp.bytes().await?;
            anyhow::Ok((status, bytes))
        }
        .await;
        let latency = t0.elapsed();
        let (status, bytes) = match answer {
            Ok(a) => a,
            Err(e) => return Answer::Transport(format!("+91{national}: {e:#}")),
        };
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        if status != reqwest::StatusCode::OK {
            return Answer::Status(status, text());
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if v["Status"] != "Success" || !v["Match"].is_boolean() {
            return Answer::Bad(text());
        }
        Answer::Ok(latency, v)
    }

    /// Warm-up, the start barrier, then measured requests until the count is used up.
    async fn run(self, barrier: Arc<Barrier>) -> anyhow::Result<WorkerReport> {
        let mut rng = Rng(self.run ^ (self.index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let mut report = WorkerReport::default();
        for _ in 0..self.warmup {
            let national = self.numbers.pick(&mut rng, false);
            // Warm-up answers are not judged; a broken gateway shows in the measured ones.
            let _ = self.ask(national).await;
        }
        barrier.wait().await;
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if n >= self.limit {
                break;
            }
            let unknown = is_unknown(n, self.unknown_pct);
            let national = self.numbers.pick(&mut rng, unknown);
            report.sent += 1;
            if unknown {
                report.unknown_sent += 1;
            } else {
                report.known_sent += 1;
            }
            let (latency, v) = match self.ask(national).await {
                Answer::Ok(latency, v) => (latency, v),
                Answer::Status(status, body) => {
                    *report.non_200.entry(status.as_u16()).or_default() += 1;
                    report.note(format!("+91{national}: {status} {body}"));
                    continue;
                }
                Answer::Bad(body) => {
                    report.bad_answers += 1;
                    report.note(format!("+91{national}: unexpected answer {body}"));
                    continue;
                }
                Answer::Transport(e) => {
                    report.transport_errors += 1;
                    report.note(e);
                    continue;
                }
            };
            report.ok += 1;
            if unknown {
                report.unknown.push(latency);
            } else {
                report.known.push(latency);
            }
            if v["Match"] == true {
                report.matched += 1;
                if unknown {
                    report.unknown_wrong += 1;
                    report.note(format!("+91{national} (unknown) matched: {v}"));
                    continue;
                }
                if let Some(owner) = &self.owner_id {
                    report.owner_checked += 1;
                    if v["OwnerId"].as_str() != Some(owner.as_str()) {
                        report.owner_mismatches += 1;
                        report.note(format!("+91{national}: OwnerId is not {owner}: {v}"));
                    }
                }
                if report.sample.is_none() {
                    report.sample = Some((format!("+91{national}"), v));
                }
            } else {
                let reason = v["Reason"].as_str().unwrap_or("(none)").to_owned();
                if unknown && reason != "NoLead" {
                    report.unknown_wrong += 1;
                    report.note(format!("+91{national} (unknown): {v}"));
                } else if !unknown {
                    report.known_no_match += 1;
                    report.note(format!("+91{national} (seeded) did not match: {v}"));
                }
                *report.no_match.entry(reason).or_default() += 1;
            }
        }
        report.end = Some(Instant::now());
        Ok(report)
    }
}

/// Runs `call-route` and prints its table and JSON line.
///
/// # Errors
/// Bad options, or any request that did not get the answer it should have.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.count == 0 {
        bail!("--concurrency and --count must be at least 1");
    }
    let numbers = Numbers::new(args.number_base, args.numbers, args.unknown_pct)?;
    let base = admin::base_url(&args.url);
    if !base.starts_with("http://") && !base.starts_with("https://") {
        bail!("--url must start with http:// (got {base})");
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency.max(8))
        .build()?;
    let run = admin::run_nonce();
    let url_prefix = format!("{base}/api/v1/telephony/call-route?caller_id=%2B91");

    let barrier = Arc::new(Barrier::new(args.concurrency + 1));
    let next = Arc::new(AtomicUsize::new(0));
    let warmup_start = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|index| {
            let worker = Worker {
                index,
                run,
                client: client.clone(),
                url_prefix: url_prefix.clone(),
                access_key: args.access_key.clone(),
                secret_key: args.secret_key.clone(),
                owner_id: args.owner_id.clone(),
                numbers,
                unknown_pct: args.unknown_pct,
                warmup: args.warmup,
                next: next.clone(),
                limit: args.count,
            };
            tokio::spawn(worker.run(barrier.clone()))
        })
        .collect();
    barrier.wait().await;
    let warmup = warmup_start.elapsed();
    let start = Instant::now();
    let reports = try_join_all(tasks).await.context("a worker panicked")?;
    let mut all = WorkerReport::default();
    for r in reports {
        all.merge(r?);
    }
    let wall = all.end.unwrap_or(start).saturating_duration_since(start);

    let mut every = all.known.clone();
    every.extend_from_slice(&all.unknown);
    let latency = stats::summarize(every);
    let known = stats::summarize(std::mem::take(&mut all.known));
    let unknown = stats::summarize(std::mem::take(&mut all.unknown));
    // request counts are far below f64's exact integer range
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
    let reasons: serde_json::Map<String, Value> = all
        .no_match
        .iter()
        .map(|(reason, n)| (reason.clone(), json!(n)))
        .collect();
    let no_match = all.no_match_total();

    println!(
        "call-route: {} requests, concurrency {}, {} seeded numbers +91{}..+91{}, {} % unknown (warm-up {} per worker, {:.1} s)",
        args.count,
        args.concurrency,
        numbers.count,
        numbers.base,
        numbers.base + numbers.count - 1,
        args.unknown_pct,
        args.warmup,
        warmup.as_secs_f64()
    );
    println!("{}", stats::header());
    println!("{}", stats::row("route (all)", latency));
    println!("{}", stats::row("route seeded (Match)", known));
    println!("{}", stats::row("route unknown", unknown));
    println!(
        "throughput           {} answers in {:.3} s = {throughput:.1} requests/s ({} sent: {} seeded, {} unknown)",
        all.ok,
        wall.as_secs_f64(),
        all.sent,
        all.known_sent,
        all.unknown_sent
    );
    let reasons_text = if all.no_match.is_empty() {
        String::from("-")
    } else {
        all.no_match
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "answers              Match:true={} Match:false={no_match} (reasons: {reasons_text})",
        all.matched
    );
    println!(
        "checks               non_200={non_200} transport_errors={} bad_answers={} seeded_no_match={} unknown_wrong={} owner_checked={} owner_mismatches={}",
        all.transport_errors,
        all.bad_answers,
        all.known_no_match,
        all.unknown_wrong,
        all.owner_checked,
        all.owner_mismatches
    );
    for (code, n) in &all.non_200 {
        println!("non-200              {code}: {n}");
    }
    match &all.sample {
        Some((caller, v)) => println!("sample answer        {caller}: {v}"),
        None => println!("sample answer        (no match answered)"),
    }
    for e in &all.errors {
        println!("error                {e}");
    }
    let line = json!({
        "bench": "call-route",
        "concurrency": args.concurrency,
        "count": args.count,
        "warmup_per_worker": args.warmup,
        "numbers": numbers.count,
        "number_base": numbers.base,
        "unknown_pct": args.unknown_pct,
        "latency_ms": stats::json_or_null(latency),
        "latency_seeded_ms": stats::json_or_null(known),
        "latency_unknown_ms": stats::json_or_null(unknown),
        "wall_s": round3(wall.as_secs_f64()),
        "throughput_per_s": round3(throughput),
        "total": all.sent,
        "seeded_sent": all.known_sent,
        "unknown_sent": all.unknown_sent,
        "ok": all.ok,
        "match_true": all.matched,
        "match_false": no_match,
        "no_match_reasons": reasons,
        "non_200": non_200,
        "non_200_by_status": non_200_by_status,
        "transport_errors": all.transport_errors,
        "bad_answers": all.bad_answers,
        "seeded_no_match": all.known_no_match,
        "unknown_wrong": all.unknown_wrong,
        "owner_checked": all.owner_checked,
        "owner_mismatches": all.owner_mismatches,
        "sample_owner_id": all.sample.as_ref().and_then(|(_, v)| v["OwnerId"].as_str().map(str::to_owned)),
    });
    println!("{line}");
    let failed = all.failed();
    if failed > 0 {
        bail!(
            "{failed} of {} route requests did not get the expected answer",
            all.sent
        );
    }
    if args.owner_id.is_some() && all.known_sent > 0 && all.owner_checked == 0 {
        bail!("no answer named an owner to check");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unknown_requests_are_the_asked_share_spread_evenly() {
        for pct in [0u8, 1, 10, 50, 100] {
            let n = (0..1000).filter(|&n| is_unknown(n, pct)).count();
            assert_eq!(n, usize::from(pct) * 10, "pct {pct}");
        }
        let tens: Vec<usize> = (0..30).filter(|&n| is_unknown(n, 10)).collect();
        assert_eq!(tens, vec![9, 19, 29]);
    }

    #[test]
    fn picks_stay_in_their_ranges() {
        let numbers = Numbers::new(9_000_000_000, 1_000_000, 10).unwrap();
        let mut rng = Rng(42);
        for _ in 0..10_000 {
            let k = numbers.pick(&mut rng, false);
            assert!((9_000_000_000..9_001_000_000).contains(&k));
            let u = numbers.pick(&mut rng, true);
            assert!((9_001_000_000..9_002_000_000).contains(&u));
        }
    }

    #[test]
    fn ranges_must_be_indian_mobiles_with_room_above() {
        assert!(Numbers::new(5_999_999_999, 10, 0).is_err());
        assert!(Numbers::new(9_999_999_990, 11, 0).is_err());
        assert!(Numbers::new(9_999_999_990, 10, 10).is_err());
        assert!(Numbers::new(9_999_999_990, 10, 0).is_ok());
        let n = Numbers::new(9_999_999_980, 10, 10).unwrap();
        assert_eq!(n.unknown, 10);
        assert!(Numbers::new(9_000_000_000, 0, 0).is_err());
    }
}
