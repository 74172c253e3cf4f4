//! Criterion benchmarks of the two lookups every provider request makes: parsing a
//! phone number the way providers send it, and finding a caller's leads by number in a
//! store of 1,000,000 leads (the indexed `lead_numbers` lookup the popup, call log and
//! call route share).
//!
//! `cargo bench --bench lookup` (release). The million-lead SQLite file is built once
//! under `target/bench-data/` (about a minute; `BENCH_LEADS` changes the count) and
//! reused by later runs.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand::Rng as _;
use sqlx::Connection as _;
use std::hint::black_box;
use std::path::PathBuf;
use utc_gateway::domain::phone::{AgentNumber, Country, PhoneNumber};
use utc_gateway::store::DynStore;

/// Lead i has the number +91 (BASE + i): valid Indian mobile numbers.
const BASE: u64 = 9_000_000_000;

fn lead_count() -> u64 {
    std::env::var("BENCH_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn phone_parsing(c: &mut Criterion) {
    let india = Country::parse("IN").expect("IN");
    let mut g = c.benchmark_group("phone_parse");
    for (name, raw) in [
        ("e164", "+918611795988"),
        ("national_trunk_0", "08611795988"),
        ("national_10_digits", "8611795988"),
        ("formatted", "+91 86117-95988"),
        ("foreign", "+1 (415) 555-2671"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| PhoneNumber::parse(black_box(raw), india).expect("valid"));
        });
    }
    g.bench_function("agent_extension", |b| {
        b.iter(|| AgentNumber::parse(black_box("101"), india).expect("valid"));
    });
    g.bench_function("invalid", |b| {
        b.iter(|| PhoneNumber::parse(black_box("12"), india).is_err());
    });
    g.finish();
}

/// Opens (building it on first use) the store holding `count` leads.
async fn seeded_store(count: u64) -> DynStore {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench-data dir");
    let path = dir.join(format!("leads-{count}.db"));
    let url = format!("sqlite://{}", path.display());
    let store = utc_gateway::store::open(&url).await.expect("open store");
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leads")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    if have as u64 != count {
        eprintln!("seeding {count} leads into {} (once)", path.display());
        sqlx::query("DELETE FROM leads")
            .execute(&mut conn)
            .await
            .expect("reset");
        let started = std::time::Instant::now();
        let mut i = 0;
        while i < count {
            let mut tx = conn.begin().await.expect("begin");
            for j in i..(i + 50_000).min(count) {
                let id = uuid::Uuid::new_v4().to_string();
                let phone = format!("+91{}", BASE + j);
                let at = 1_700_000_000_000_i64 + j as i64;
                sqlx::query(
                    "INSERT INTO leads (id, first_name, phone, secondary_numbers, fields, created_at, updated_at) \
                     VALUES (?, ?, ?, '[]', '{}', ?, ?)",
                )
                .bind(&id)
                .bind(format!("Bench {j}"))
                .bind(&phone)
                .bind(at)
                .bind(at)
                .execute(&mut *tx)
                .await
                .expect("insert lead");
                sqlx::query("INSERT INTO lead_numbers (number, lead_id) VALUES (?, ?)")
                    .bind(&phone)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .expect("insert number");
            }
            tx.commit().await.expect("commit");
            i = (i + 50_000).min(count);
        }
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .expect("checkpoint");
        eprintln!("seeded in {:.1} s", started.elapsed().as_secs_f64());
    }
    store
}

fn lead_lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let count = lead_count();
    let store = rt.block_on(seeded_store(count));
    let india = Country::parse("IN").expect("IN");
    let mut g = c.benchmark_group(format!("lead_lookup_{count}_leads"));
    g.bench_function("by_number_hit", |b| {
        b.iter_batched(
            || {
                let i = rand::rng().random_range(0..count);
                PhoneNumber::parse(&format!("+91{}", BASE + i), india).expect("valid")
            },
            |n| {
                let leads = rt.block_on(store.leads_by_number(&n, 11)).expect("lookup");
                assert_eq!(leads.len(), 1);
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("by_number_miss", |b| {
        let n = PhoneNumber::parse("+918611795988", india).expect("valid");
        b.iter(|| {
            let leads = rt.block_on(store.leads_by_number(&n, 11)).expect("lookup");
            assert!(leads.is_empty());
        });
    });
    g.finish();
}

criterion_group!(benches, phone_parsing, lead_lookup);
criterion_main!(benches);
