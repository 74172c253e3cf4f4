//! The SQLite store's engine: one thread that owns a rusqlite connection and runs
//! whole store operations sent to it as closures.
//!
//! Why a thread of our own: sqlx's SQLite driver hands every statement to a worker
//! thread and back (and returns pooled connections through a task), so an operation
//! of five statements paid ten thread switches or more — most of the CPU of a popup
//! on a two-core machine. Here an operation costs one hop there and one back, however
//! many statements it runs.
//!
//! Group commit: the thread drains what is queued (up to [`MAX_BATCH`] jobs) and runs
//! the writes of one batch in one transaction, each after the first inside a savepoint
//! (a job that fails undoes only its own statements). Every caller is answered after
//! the COMMIT: an answer means the write is in the database, and a failed commit fails
//! every job of the batch. Under load the WAL is appended to once per batch instead of
//! once per write.
//!
//! Checkpoints: SQLite's automatic checkpoint is off (it would run inside a commit,
//! with an fsync, holding up every writer behind it). A checkpointer thread with a
//! connection of its own, at a lower CPU priority than the rest of the process, copies
//! the WAL into the database ten times a second without stopping the writers. The WAL
//! only starts over once a checkpoint has copied all of it — never, under steady
//! writes, as frames keep arriving during the copy (without what follows the WAL grew
//! by gigabytes under load). So once the WAL is long, the checkpointer catches up until
//! only a few frames are left, flushes to disk what it copied, and hands the engine a
//! job that finishes the checkpoint between two batches, the writers held for well
//! under a millisecond; the next write restarts the WAL from its beginning.
//!
//! Writers elsewhere in the process (the sqlx pool, for the rest of the store) take
//! the same process-wide write lock, so the engine never waits in SQLite's busy
//! handler for one of them.

use super::StoreError;
use rusqlite::Connection;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};

/// The most jobs one batch (one transaction) runs.
const MAX_BATCH: usize = 256;
/// Jobs waiting for the thread before senders wait too.
const QUEUE: usize = 4096;

/// What a job leaves to do once its batch has committed (or failed to): answer.
type Answer = Box<dyn FnOnce(Result<(), &str>) + Send>;
/// A job: runs on the engine's connection (or, given none, does not run and fails);
/// says whether it succeeded (a failed write is rolled back to its savepoint) and how
/// to answer.
type Work = Box<dyn FnOnce(Option<&Connection>) -> (bool, Answer) + Send>;

/// What a job is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Runs in a read transaction, or in a batch's write transaction.
    Read,
    /// Runs in a write transaction.
    Write,
    /// Finishes a WAL checkpoint (see the module's comment): runs after the jobs
    /// queued before it, outside any transaction, holding the write lock.
    Finish,
}

struct Job {
    kind: Kind,
    work: Work,
}

/// How often the checkpointer runs.
/// (Often: the more frames a checkpoint leaves, the longer the writers wait for it.)
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL frames (pages) beyond which the checkpointer has the engine finish a
/// checkpoint that writes kept from completing (4,096 frames: 16 MiB of 4 KiB pages).
const RESTART_FRAMES: i64 = 4096;
/// Frames left to copy at which the checkpointer hands the finish to the engine.
const FINISH_FRAMES: i64 = 64;
/// Catch-up passes after which the checkpointer hands the finish over anyway.
const CATCH_UP_PASSES: usize = 8;
/// The checkpointer thread's nice value, above the process's 0: where it competes
/// for a core with the threads answering requests, they run first.
const CHECKPOINTER_NICE: i32 = 10;

/// A handle to the engine thread; cloning shares it. The thread ends when the last
/// handle is dropped, after the jobs already queued; so does the checkpointer.
#[derive(Clone)]
pub(super) struct Engine {
    jobs: mpsc::Sender<Job>,
    /// Dropped with the last handle: stops the checkpointer.
    _checkpointer: std::sync::mpsc::SyncSender<()>,
}

impl Engine {
    /// Opens `path` (already created and migrated) on a new thread.
    ///
    /// # Errors
    /// The database cannot be opened or configured.
    pub(super) fn open(path: &Path, write_lock: Arc<Mutex<()>>) -> anyhow::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA journal_size_limit = 67108864;",
        )?;
        conn.set_prepared_statement_cache_capacity(128);
        // Query planner stability: without it, SQLite re-plans a statement each time a
        // parameter its plan looked at is bound anew (every `LIMIT ?`), which cost a
        // quarter of this thread's time on the popup path.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        let checkpoints = Connection::open(path)?;
        checkpoints.busy_timeout(Duration::from_secs(5))?;
        let mut files = Files::new(path);
        let (stop, stopped) = std::sync::mpsc::sync_channel(0);
        let (jobs, rx) = mpsc::channel(QUEUE);
        let engine = jobs.downgrade();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run_checkpoints(&checkpoints, &mut files, &engine, &stopped))?;
        std::thread::Builder::new()
            .name("sqlite-engine".into())
            .spawn(move || run(&conn, rx, &write_lock))?;
        Ok(Self {
            jobs,
            _checkpointer: stop,
        })
    }

    /// Runs `f` on the engine's connection, outside any write transaction unless it
    /// shares a batch with writes.
    pub(super) async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.submit(Kind::Read, f).await
    }

    /// Runs `f` inside a write transaction (a savepoint of the batch's); answers once
    /// the transaction has committed. An `Err` from `f` undoes what `f` wrote.
    pub(super) async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.submit(Kind::Write, f).await
    }

    async fn submit<T, E, F>(&self, kind: Kind, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let work: Work = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => catch_unwind(AssertUnwindSafe(|| f(conn)))
                    .unwrap_or_else(|_| Err(unavailable("a store operation panicked").into())),
                None => Err(unavailable("the store could not start the operation").into()),
            };
            let ok = result.is_ok();
            let answer: Answer = Box::new(move |committed| {
                let result = match committed {
                    Ok(()) => result,
                    Err(why) => Err(unavailable(why).into()),
                };
                // the caller may have gone away; what committed stays committed
                let _ = tx.send(result);
            });
            (ok, answer)
        });
        self.jobs
            .send(Job { kind, work })
            .await
            .map_err(|_| unavailable("the store engine has stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(unavailable("the store engine dropped an operation").into()))
    }
}

fn unavailable(why: &str) -> StoreError {
    StoreError::Unavailable(anyhow::anyhow!("{why}"))
}

/// One PASSIVE checkpoint: copies what it can without waiting for anyone; returns
/// the frames in the WAL and how many of them are now in the database.
fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// The checkpointer thread: every [`CHECKPOINT_EVERY`] until `stopped` disconnects
/// or the engine has stopped.
fn run_checkpoints(
    conn: &Connection,
    files: &mut Files,
    engine: &mpsc::WeakSender<Job>,
    stopped: &std::sync::mpsc::Receiver<()>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let failed = |e: rusqlite::Error| {
        tracing::debug!(error = %e, "WAL checkpoint failed; the next one retries");
    };
    lower_priority(CHECKPOINTER_NICE);
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        let Ok((mut frames, mut copied)) = checkpoint(conn).map_err(failed) else {
            continue;
        };
        if frames <= RESTART_FRAMES {
            continue;
        }
        // Catch up without the lock first: each pass copies only what came in during
        // the one before, so a few passes leave a handful of frames...
        for _ in 0..CATCH_UP_PASSES {
            if frames - copied <= FINISH_FRAMES {
                break;
            }
            let Ok(now) = checkpoint(conn).map_err(failed) else {
                break;
            };
            (frames, copied) = now;
        }
        // ...and flushes to disk what the passes wrote, so that the finishing pass's
        // own syncs (of the WAL before it copies, of the database after) find almost
        // nothing left to write: the database's sync would otherwise write out every
        // page copied since the WAL last started over, milliseconds with every writer
        // waiting (the p99 of a popup at 1,000/s)...
        files.flush();
        // ...and the engine finishes, between two batches
        let Some(jobs) = engine.upgrade() else {
            return;
        };
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let work: Work = Box::new(move |conn| {
            let _ = done.send(conn.map(checkpoint));
            (true, Box::new(|_| {}))
        });
        if jobs
            .blocking_send(Job {
                kind: Kind::Finish,
                work,
            })
            .is_err()
        {
            return;
        }
        drop(jobs);
        if let Ok(Some(Err(e))) = finished.recv() {
            failed(e);
        }
    }
}

/// Lowers the calling thread's CPU priority to `nice` (Linux: a thread's own nice
/// value); elsewhere, or when refused, it keeps running as it is.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let me = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(me), nice) {
            tracing::debug!(error = %e, "the checkpointer keeps its CPU priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The database file and its WAL, opened to flush them to disk ahead of SQLite
/// (`fdatasync` writes out a file's dirty pages whichever descriptor they were written
/// through).
struct Files {
    db: std::path::PathBuf,
    wal: std::path::PathBuf,
    open: Option<(std::fs::File, std::fs::File)>,
}

impl Files {
    fn new(db: &Path) -> Self {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Self {
            db: db.to_owned(),
            wal: wal.into(),
            open: None,
        }
    }

    /// Writes both files' dirty pages to disk. On failure it only logs: SQLite's own
    /// syncs, which follow, are what durability rests on.
    fn flush(&mut self) {
        if let Err(e) = self.try_flush() {
            tracing::debug!(error = %e, "could not flush the database files ahead of a checkpoint");
        }
    }

    fn try_flush(&mut self) -> std::io::Result<()> {
        let (db, wal) = match self.open.take() {
            Some(files) => files,
            None => (
                std::fs::File::open(&self.db)?,
                std::fs::File::open(&self.wal)?,
            ),
        };
        let flushed = wal.sync_data().and_then(|()| db.sync_data());
        self.open = Some((db, wal));
        flushed
    }
}

/// The engine thread: batches until every handle is gone.
fn run(conn: &Connection, mut rx: mpsc::Receiver<Job>, write_lock: &Mutex<()>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        // a batch ends at a checkpoint's finish, which runs after it
        while batch.len() < MAX_BATCH && batch.last().is_some_and(|j| j.kind != Kind::Finish) {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let finish = batch.pop_if(|j| j.kind == Kind::Finish);
        if batch.iter().any(|j| j.kind == Kind::Write) {
            run_writes(conn, &mut batch, write_lock);
        } else if !batch.is_empty() {
            run_reads(conn, &mut batch);
        }
        if let Some(job) = finish {
            let lock = write_lock.blocking_lock();
            let (_, answer) = (job.work)(Some(conn));
            drop(lock);
            answer(Ok(()));
        }
    }
}

/// Runs a transaction-control statement (prepared once, kept on the connection).
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs a batch of reads in one read transaction (one snapshot).
fn run_reads(conn: &Connection, batch: &mut Vec<Job>) {
    let began = control(conn, "BEGIN").is_ok();
    let answers: Vec<Answer> = batch
        .drain(..)
        .map(|job| (job.work)(Some(conn)).1)
        .collect();
    if began {
        let _ = control(conn, "COMMIT");
    }
    for answer in answers {
        answer(Ok(()));
    }
}

/// Fails every job of `batch` without running it.
fn refuse(batch: &mut Vec<Job>, why: &str) {
    for job in batch.drain(..) {
        let (_, answer) = (job.work)(None);
        answer(Err(why));
    }
}

/// Runs a batch holding writes in one transaction; answers every job after it ends.
///
/// The first write of the transaction runs without a savepoint (a savepoint copies
/// every page a job touches to a sub-journal, a sixth of this thread's time at 2,000
/// popups/s, when most batches hold one write): should it fail, the whole transaction
/// — which holds nothing else yet — is rolled back and a new one begun.
fn run_writes(conn: &Connection, batch: &mut Vec<Job>, write_lock: &Mutex<()>) {
    let _lock = write_lock.blocking_lock();
    if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
        tracing::warn!(error = %e, "the store could not begin a write transaction");
        refuse(batch, "the store could not begin a write transaction");
        return;
    }
    let mut answers = Vec::with_capacity(batch.len());
    // no write of this transaction is kept yet
    let mut clean = true;
    // the transaction is open (a failed restart leaves the rest of the batch unrun)
    let mut open = true;
    for job in batch.drain(..) {
        if !open {
            answers.push((job.work)(None).1);
            continue;
        }
        if job.kind != Kind::Write {
            answers.push((job.work)(Some(conn)).1);
            continue;
        }
        if clean {
            let (ok, answer) = (job.work)(Some(conn));
            answers.push(answer);
            if ok {
                clean = false;
            } else {
                let _ = control(conn, "ROLLBACK");
                if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
                    tracing::warn!(error = %e, "the store could not begin a write transaction");
                    open = false;
                }
            }
            continue;
        }
        if control(conn, "SAVEPOINT job").is_err() {
            // not run: fails with the batch's answer or on its own
            answers.push((job.work)(None).1);
            continue;
        }
        let (ok, answer) = (job.work)(Some(conn));
        let end = if ok {
            control(conn, "RELEASE job")
        } else {
            control(conn, "ROLLBACK TO job").and_then(|()| control(conn, "RELEASE job"))
        };
        if let Err(e) = end {
            tracing::warn!(error = %e, "the store could not end a savepoint");
        }
        answers.push(answer);
    }
    // with the transaction gone, no kept write is waiting: each job answers for itself
    let committed = if !open {
        Ok(())
    } else {
        match control(conn, "COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "the store could not commit a batch of writes");
                let _ = control(conn, "ROLLBACK");
                Err("the store could not commit the write")
            }
        }
    };
    drop(_lock);
    for answer in answers {
        answer(committed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreResult;

    fn open() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        Engine,
        Arc<Mutex<()>>,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let setup = Connection::open(&path).expect("open");
        setup
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER, pad BLOB);")
            .expect("schema");
        drop(setup);
        let lock = Arc::new(Mutex::new(()));
        let engine = Engine::open(&path, lock.clone()).expect("engine");
        (dir, path, engine, lock)
    }

    fn insert(
        engine: &Engine,
        x: i64,
        fail: bool,
    ) -> impl Future<Output = StoreResult<i64>> + use<> {
        let engine = engine.clone();
        async move {
            engine
                .write(move |c| {
                    c.execute("INSERT INTO t (x) VALUES (?)", [x])?;
                    if fail {
                        return Err(StoreError::NotFound);
                    }
                    Ok(x)
                })
                .await
        }
    }

    async fn values(engine: &Engine) -> Vec<i64> {
        engine
            .read(|c| {
                let mut stmt = c.prepare("SELECT x FROM t ORDER BY x")?;
                let xs = stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()?;
                Ok::<_, StoreError>(xs)
            })
            .await
            .expect("read")
    }

    /// Runs `inserts` (value, whether it fails) as one batch: while the test holds
    /// the write lock, the engine waits with a first job's batch (inserting 1); the
    /// others queue up meanwhile and run together as one batch afterwards. Returns
    /// each insert's answer (`None` for one that failed).
    async fn one_batch(
        engine: &Engine,
        lock: &Mutex<()>,
        inserts: &[(i64, bool)],
    ) -> Vec<Option<i64>> {
        let guard = lock.lock().await;
        let first = tokio::spawn(insert(engine, 1, false));
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let batch: Vec<_> = inserts
            .iter()
            .map(|&(x, fail)| tokio::spawn(insert(engine, x, fail)))
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(guard);
        assert_eq!(first.await.expect("join").expect("stored"), 1);
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch {
            answers.push(match job.await.expect("join") {
                Ok(x) => Some(x),
                Err(StoreError::NotFound) => None,
                Err(e) => panic!("an unexpected error: {e}"),
            });
        }
        answers
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_job_undoes_its_own_writes_and_no_other_in_its_batch() {
        let (_dir, _path, engine, lock) = open();
        let answers = one_batch(&engine, &lock, &[(2, false), (3, true), (4, false)]).await;
        assert_eq!(answers, vec![Some(2), None, Some(4)]);
        assert_eq!(values(&engine).await, vec![1, 2, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_first_write_of_a_batch_is_undone_and_the_rest_kept() {
        let (_dir, _path, engine, lock) = open();
        // the first write of a transaction runs without a savepoint: its failure
        // rolls the transaction back, and the batch goes on in a new one
        let inserts = [(2, true), (3, false), (4, true), (5, false)];
        let answers = one_batch(&engine, &lock, &inserts).await;
        assert_eq!(answers, vec![None, Some(3), None, Some(5)]);
        assert_eq!(values(&engine).await, vec![1, 3, 5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_fails_alone_and_the_engine_goes_on() {
        let (_dir, _path, engine, _lock) = open();
        let panicked = engine
            .write(|c| -> StoreResult<()> {
                c.execute("INSERT INTO t (x) VALUES (9)", [])?;
                panic!("a bug in a store operation");
            })
            .await;
        assert!(matches!(panicked, Err(StoreError::Unavailable(_))));
        insert(&engine, 5, false).await.expect("stored");
        assert_eq!(values(&engine).await, vec![5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_steady_writes() {
        let (_dir, path, engine, _lock) = open();
        // ~3 pages a commit, commits back to back for at least a second: without the
        // checkpointer's finishing pass the WAL would hold every frame written
        let started = std::time::Instant::now();
        let mut commits = 0_i64;
        while commits < 4000 || started.elapsed() < std::time::Duration::from_secs(1) {
            engine
                .write(move |c| {
                    c.execute(
                        "INSERT INTO t (x, pad) VALUES (?, zeroblob(9000))",
                        [commits],
                    )?;
                    Ok::<_, StoreError>(())
                })
                .await
                .expect("stored");
            commits += 1;
        }
        let frames: i64 = Connection::open(&path)
            .expect("open")
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .expect("checkpoint");
        assert!(
            frames < commits,
            "the WAL holds {frames} frames after {commits} commits of 3 pages or more"
        );
        assert_eq!(
            values(&engine).await.len(),
            usize::try_from(commits).unwrap_or(0)
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_runs_below_the_rest_of_the_process() {
        let (_dir, _path, _engine, _lock) = open();
        // its thread names itself at once; give it a moment to lower its priority
        let nice_of = |name: &str| {
            std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
                })
                .map(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).expect("stat");
                    // after the command name: field 3 onwards; nice is field 19
                    let rest = stat.rsplit_once(')').expect("comm").1;
                    rest.split_whitespace()
                        .nth(16)
                        .expect("nice")
                        .parse::<i32>()
                        .expect("a number")
                })
                .collect::<Vec<_>>()
        };
        let mut nice = Vec::new();
        for _ in 0..100 {
            nice = nice_of("sqlite-checkpoi");
            if nice.iter().all(|&n| n == CHECKPOINTER_NICE) && !nice.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!nice.is_empty(), "no checkpointer thread");
        assert!(
            nice.iter().all(|&n| n == CHECKPOINTER_NICE),
            "checkpointer nice values: {nice:?}"
        );
        assert!(nice_of("sqlite-engine").iter().all(|&n| n == 0));
    }
}
