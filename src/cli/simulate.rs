//! `utc-gateway simulate`: plays a telephony provider against a running gateway, so a
//! newcomer sees popups arrive in the console without a phone line (SPEC 2.1, 2.2, 2.5).
//! Each call is a popup, then — after a random talk time, in real time — its call log;
//! some calls are missed, some answered calls carry a recording. Calls start at a fixed
//! rate and overlap. Every request and answer is printed; a summary ends the run. Keys
//! travel in the `x-LSQ-*` headers, never in a URL.

use anyhow::Context as _;
use rand::Rng as _;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The wire format the simulated provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SimFormat {
    /// The generic LGTC field names.
    Generic,
    /// Knowlarity's Super Receptionist V2 names.
    SuperReceptionistV2,
}

/// Arguments of `simulate`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// The gateway's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub base: url::Url,
    /// The connector's access key.
    #[arg(long, env = "UTC_SIM_ACCESS_KEY")]
    pub access_key: String,
    /// The connector's secret key (prefer the environment variable: arguments show in `ps`).
    #[arg(long, env = "UTC_SIM_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,
    /// How many calls to play.
    #[arg(long, default_value_t = 10)]
    pub calls: u32,
    /// Calls started per second.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// The agent-side number or extension (the agent who gets the popups).
    #[arg(long, default_value = "101")]
    pub agent_number: String,
    /// The virtual number the caller dialled (DisplayNumber), if the connector has one.
    #[arg(long)]
    pub virtual_number: Option<String>,
    /// A fixed caller number (default: a random Indian mobile number per call).
    #[arg(long)]
    pub caller: Option<String>,
    /// Wire format.
    #[arg(long, value_enum, default_value_t = SimFormat::Generic)]
    pub format: SimFormat,
    /// Longest talk time in seconds; each answered call talks 1..=this (0: log at once).
    #[arg(long, default_value_t = 20)]
    pub max_talk_secs: u64,
    /// Share of calls that are missed, in percent.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub missed_percent: u8,
    /// Share of answered calls with a recording, in percent.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub recording_percent: u8,
    /// Base URL of the recording links sent with answered calls.
    #[arg(long, default_value = "https://recordings.example.com")]
    pub recording_base: String,
}

/// One planned call.
#[derive(Clone, Debug)]
struct Call {
    n: u32,
    session: String,
    caller: String,
    missed: bool,
    talk_secs: u64,
    recording: Option<String>,
}

/// What the run saw.
#[derive(Default)]
struct Tally {
    popup_ms: Vec<f64>,
    log_ms: Vec<f64>,
    popups_ok: u32,
    logs_ok: u32,
    delivered: u32,
    queued: u32,
    missed: u32,
    recordings: u32,
    failed: Vec<String>,
}

/// Runs the simulation; fails (exit 1) when any request did not get a 2xx.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number of calls per second"
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .context("building the HTTP client")?;
    let sim = Arc::new(Sim {
        popup_url: args
            .base
            .join("v2/Telephony.svc/ShowAgentPopup")
            .context("--base")?,
        log_url: args
            .base
            .join("v2/Telephony.svc/LogCall")
            .context("--base")?,
        client,
        tally: Mutex::new(Tally::default()),
        args,
    });
    let run_id: u32 = rand::rng().random_range(0x1000..0xffff);
    println!(
        "simulating {} call(s) at {}/s to {} as a {} provider, agent {}",
        sim.args.calls,
        sim.args.rate,
        sim.args.base,
        match sim.args.format {
            SimFormat::Generic => "generic",
            SimFormat::SuperReceptionistV2 => "Super Receptionist V2",
        },
        sim.args.agent_number
    );
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=sim.args.calls {
        let call = sim.plan(n, run_id);
        let at = start + Duration::from_secs_f64(f64::from(n - 1) / sim.args.rate);
        let sim = sim.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(at).await;
            sim.play(call).await;
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a simulated call panicked")?;
    }
    sim.summary()
}

struct Sim {
    args: SimulateArgs,
    popup_url: url::Url,
    log_url: url::Url,
    client: reqwest::Client,
    tally: Mutex<Tally>,
}

impl Sim {
    fn plan(&self, n: u32, run_id: u32) -> Call {
        let mut rng = rand::rng();
        let caller = self.args.caller.clone().unwrap_or_else(|| {
            format!(
                "0{}{:09}",
                rng.random_range(6..=9),
                rng.random_range(0..1_000_000_000u32)
            )
        });
        let missed = rng.random_range(0..100) < self.args.missed_percent;
        let talk_secs = if missed || self.args.max_talk_secs == 0 {
            0
        } else {
            rng.random_range(1..=self.args.max_talk_secs)
        };
        let session = format!("sim-{run_id:x}-{n}");
        let recording =
            (!missed && rng.random_range(0..100) < self.args.recording_percent).then(|| {
                format!(
                    "{}/{session}.mp3",
                    self.args.recording_base.trim_end_matches('/')
                )
            });
        Call {
            n,
            session,
            caller,
            missed,
            talk_secs,
            recording,
        }
    }

    async fn play(&self, call: Call) {
        let tag = format!("[call {}/{} {}]", call.n, self.args.calls, call.session);
        let began = chrono::Utc::now();
        let (status, body, ms) = self.post(&self.popup_url, &self.popup_body(&call)).await;
        let message = &body["Message"];
        println!(
            "{tag} popup from {} → {status} {} ({ms:.1} ms)",
            call.caller,
            describe(status, &body, || format!(
                "Delivered={} Queued={}",
                message["Delivered"], message["Queued"]
            ))
        );
        {
            let mut t = self.tally.lock().await;
            t.popup_ms.push(ms);
            if is_ok(status) {
                t.popups_ok += 1;
                if message["Queued"] == true {
                    t.queued += 1;
                } else if message["Delivered"].as_u64().unwrap_or(0) > 0 {
                    t.delivered += 1;
                }
            } else {
                t.failed.push(format!("{tag} popup: {status}"));
            }
        }
        let ring = if call.missed { 2 } else { 0 };
        tokio::time::sleep(Duration::from_secs(
            (call.talk_secs + ring).min(self.args.max_talk_secs),
        ))
        .await;
        let end = began + chrono::Duration::seconds(call.talk_secs as i64);
        let (status, body, ms) = self
            .post(&self.log_url, &self.log_body(&call, began, end))
            .await;
        println!(
            "{tag} log {} → {status} {} ({ms:.1} ms)",
            match (&call.recording, call.missed) {
                (_, true) => "missed".to_owned(),
                (Some(_), false) => format!("answered {} s, recording", call.talk_secs),
                (None, false) => format!("answered {} s", call.talk_secs),
            },
            describe(status, &body, || format!(
                "Id={} Duplicate={}",
                body["Message"]["Id"], body["Message"]["Duplicate"]
            ))
        );
        let mut t = self.tally.lock().await;
        t.log_ms.push(ms);
        if is_ok(status) {
            t.logs_ok += 1;
            t.missed += u32::from(call.missed);
            t.recordings += u32::from(call.recording.is_some());
        } else {
            t.failed.push(format!("{tag} log: {status}"));
        }
    }

    fn popup_body(&self, c: &Call) -> Value {
        let a = &self.args;
        match a.format {
            SimFormat::Generic => json!({
                "SourceNumber": c.caller, "DestinationNumber": a.agent_number,
                "DisplayNumber": a.virtual_number, "Direction": "Inbound",
                "CallSessionId": c.session,
            }),
            SimFormat::SuperReceptionistV2 => json!({
                "caller_id": c.caller, "agent_number": a.agent_number,
                "dispnumber": a.virtual_number, "call_type": "incoming", "callid": c.session,
            }),
        }
    }

    fn log_body(
        &self,
        c: &Call,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Value {
        let a = &self.args;
        let time =
            |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S+00:00").to_string();
        // DisplayNumber is mandatory on a log: without a virtual number, the number the
        // call reached (the agent's) stands in
        let display = a
            .virtual_number
            .clone()
            .unwrap_or_else(|| a.agent_number.clone());
        match a.format {
            SimFormat::Generic => json!({
                "SourceNumber": c.caller, "DestinationNumber": a.agent_number,
                "DisplayNumber": display, "Direction": "Inbound", "CallSessionId": c.session,
                "StartTime": time(start), "EndTime": time(end), "CallDuration": c.talk_secs,
                "Status": if c.missed { "Missed" } else { "Answered" },
                "ResourceURL": c.recording,
            }),
            SimFormat::SuperReceptionistV2 => json!({
                "caller_id": c.caller, "agent_number": a.agent_number, "dispnumber": display,
                "call_type": "incoming", "callid": c.session, "start_time": time(start),
                "end_time": time(end), "call_duration": c.talk_secs.to_string(),
                "resource_url": c.recording,
            }),
        }
    }

    /// POSTs JSON with the keys in headers; answers status (0 when no answer), body, ms.
    async fn post(&self, url: &url::Url, body: &Value) -> (u16, Value, f64) {
        let body = strip_nulls(body);
        let sent = Instant::now();
        let res = self
            .client
            .post(url.clone())
            .header("x-LSQ-AccessKey", &self.args.access_key)
            .header("x-LSQ-SecretKey", &self.args.secret_key)
            .json(&body)
            .send()
            .await;
        let (status, out) = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (
                0,
                json!({ "ExceptionMessage": e.without_url().to_string() }),
            ),
        };
        (status, out, sent.elapsed().as_secs_f64() * 1e3)
    }

    fn summary(&self) -> anyhow::Result<()> {
        let t = self.tally.try_lock().context("calls still running")?;
        println!(
            "{} calls: popups {} ok ({} delivered, {} queued), p50 {:.1} ms, p99 {:.1} ms; \
             logs {} ok ({} missed, {} with a recording), p50 {:.1} ms, p99 {:.1} ms",
            self.args.calls,
            t.popups_ok,
            t.delivered,
            t.queued,
            percentile(&t.popup_ms, 0.5),
            percentile(&t.popup_ms, 0.99),
            t.logs_ok,
            t.missed,
            t.recordings,
            percentile(&t.log_ms, 0.5),
            percentile(&t.log_ms, 0.99),
        );
        anyhow::ensure!(
            t.failed.is_empty(),
            "{} request(s) failed: {}",
            t.failed.len(),
            t.failed.join("; ")
        );
        Ok(())
    }
}

fn is_ok(status: u16) -> bool {
    (200..300).contains(&status)
}

/// `ok` text for a 2xx, else the envelope's exception (or the transport error).
fn describe(status: u16, body: &Value, ok: impl FnOnce() -> String) -> String {
    if is_ok(status) {
        return ok();
    }
    let field = body["Field"]
        .as_str()
        .map(|f| format!(" (field {f})"))
        .unwrap_or_default();
    format!(
        "{} {}{field}",
        body["ExceptionType"].as_str().unwrap_or("error"),
        body["ExceptionMessage"].as_str().unwrap_or("")
    )
}

/// Drops null members: an absent optional field, not an empty one.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn percentile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 0.5), 50.0);
        assert_eq!(percentile(&s, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn null_members_are_left_out() {
        let v = strip_nulls(&json!({"a": 1, "b": null, "c": ""}));
        assert_eq!(v, json!({"a": 1, "c": ""}));
    }
}
