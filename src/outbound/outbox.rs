//! The outbox worker (SPEC 4): claims due items per connector (at most
//! `outbox.concurrency_per_connector` in flight on this node), sends each with an
//! `Idempotency-Key`, and records the result: delivered, retry after an exponential
//! backoff with ±20 % jitter, or failed (another 4xx, or older than
//! `outbox.max_age_secs`). Claims are rows in the store, so delivery survives restarts
//! and several nodes never send one item at the same time.

use crate::domain::ids::{ConnectorId, TelephonyLogId};
use crate::domain::time::Timestamp;
use crate::outbound::client::{self, ProviderAnswer, ProviderCall};
use crate::state::AppState;
use crate::store::{OutboxItem, OutboxResult, TelephonyLogRow};
use rand::Rng as _;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Margin added to an item's timeout for its claim.
const LOCK_MARGIN_SECS: i64 = 30;

/// Runs until shutdown; deliveries in flight are tracked tasks.
pub async fn run(state: AppState) {
    let mut permits: HashMap<ConnectorId, Arc<Semaphore>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.token.cancelled() => return,
            _ = tick.tick() => {}
            () = state.outbox_wake.notified() => {}
        }
        if let Err(e) = pass(&state, &mut permits).await {
            tracing::warn!(error = ?e, "outbox pass failed");
        }
    }
}

async fn pass(
    state: &AppState,
    permits: &mut HashMap<ConnectorId, Arc<Semaphore>>,
) -> Result<(), crate::store::StoreError> {
    let now = Timestamp::now();
    let max_age = i64::try_from(state.settings.outbox.max_age_secs).unwrap_or(i64::MAX / 2000);
    let expired = state
        .store
        .expire_outbox(now.plus_secs(-max_age), now)
        .await?;
    if expired > 0 {
        tracing::warn!(items = expired, "outbox items failed at their maximum age");
    }
    let cap = state.settings.outbox.concurrency_per_connector.max(1);
    for connector in state.store.outbox_due_connectors(now).await? {
        let sem = permits
            .entry(connector)
            .or_insert_with(|| Arc::new(Semaphore::new(cap)))
            .clone();
        let free = u32::try_from(sem.available_permits()).unwrap_or(0);
        if free == 0 {
            continue;
        }
        for item in state
            .store
            .claim_outbox(connector, free, now, LOCK_MARGIN_SECS)
            .await?
        {
            let Ok(permit) = sem.clone().try_acquire_owned() else {
                break;
            };
            let state2 = state.clone();
            state.shutdown.spawn(deliver(state2, item, permit));
        }
    }
    Ok(())
}

/// The delay before attempt `attempts + 1`: initial × 2^(attempts−1) with ±20 % jitter,
/// never over the maximum.
pub fn backoff(initial_ms: u64, max_secs: u64, attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = initial_ms
        .saturating_mul(1u64 << exp)
        .min(max_secs.saturating_mul(1000));
    let jitter: f64 = rand::rng().random_range(0.8..=1.2);
    Duration::from_millis(((base as f64 * jitter) as u64).min(max_secs.saturating_mul(1000)))
}

fn retryable(a: &ProviderAnswer) -> bool {
    match a.status {
        None => true,
        Some(s) => s >= 500 || s == 408 || s == 429,
    }
}

async fn deliver(state: AppState, item: OutboxItem, permit: OwnedSemaphorePermit) {
    let Some(req) = item.request.clone() else {
        let _ = state
            .store
            .finish_outbox(
                item.id,
                &OutboxResult::Failed("unreadable request".into()),
                Timestamp::now(),
            )
            .await;
        return;
    };
    let mut headers = req.headers.clone();
    headers.push(("Idempotency-Key".to_owned(), item.id.to_string()));
    let call = ProviderCall {
        post: req.method == "POST",
        url: req.url.clone(),
        headers,
        body: req.body.clone().map(|(ct, b)| {
            (
                if ct.starts_with("application/json") {
                    "application/json"
                } else if ct.starts_with("application/x-www-form-urlencoded") {
                    "application/x-www-form-urlencoded"
                } else {
                    "text/plain; charset=utf-8"
                },
                b,
            )
        }),
        timeout: Duration::from_millis(req.timeout_ms.max(1)),
    };
    let started = Instant::now();
    let at = Timestamp::now();
    let answer = client::send(&state.http, &call).await;
    let now = Timestamp::now();
    let why = match (&answer.error, answer.status) {
        (Some(e), _) => e.clone(),
        (None, Some(s)) => format!("the provider answered {s}"),
        (None, None) => "no answer".to_owned(),
    };
    let o = &state.settings.outbox;
    let max_age = i64::try_from(o.max_age_secs).unwrap_or(i64::MAX / 2000);
    let result = if answer.is_success() {
        OutboxResult::Delivered
    } else if retryable(&answer) && item.age_from.plus_secs(max_age) > now {
        let wait = backoff(o.initial_backoff_ms, o.max_backoff_secs, item.attempts);
        OutboxResult::Retry(
            Timestamp::from_millis(
                now.millis() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2),
            ),
            why.clone(),
        )
    } else {
        OutboxResult::Failed(why.clone())
    };
    let ok = result == OutboxResult::Delivered;
    state.tlog.record(TelephonyLogRow {
        id: TelephonyLogId::time_ordered(),
        at,
        connector_id: Some(item.connector_id),
        endpoint: "disposition_forward".to_owned(),
        http_status: answer.status.unwrap_or(0),
        outcome: if ok { "ok" } else { "failed" }.to_owned(),
        error_code: (!ok).then(|| "provider_failed".to_owned()),
        error_message: (!ok).then_some(why),
        call_session_id: None,
        latency_us: i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
        request: json!({"method": req.method, "url": client::without_query(&req.url), "response_body": answer.body}),
    });
    metrics::counter!("utc_outbox_attempts_total", "result" => match result {
        OutboxResult::Delivered => "delivered",
        OutboxResult::Retry(..) => "retry",
        OutboxResult::Failed(_) => "failed",
    })
    .increment(1);
    if let Err(e) = state.store.finish_outbox(item.id, &result, now).await {
        tracing::error!(error = ?e, "recording an outbox attempt failed");
    }
    drop(permit);
    state.outbox_wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for (attempts, base) in [
            (1, 1000u64),
            (2, 2000),
            (3, 4000),
            (10, 512_000),
            (11, 600_000),
            (40, 600_000),
        ] {
            let d = backoff(1000, 600, attempts).as_millis() as u64;
            assert!(
                d >= base * 8 / 10 && d <= (base * 12 / 10).min(600_000),
                "attempt {attempts}: {d}"
            );
        }
    }
}
