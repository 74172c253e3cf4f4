//! `utc-gateway import-leads <file> [--format csv|ndjson]`: the lead import of
//! `POST /api/v1/leads/import` run straight against the configured store (no server
//! needed), reading the file block by block. On a terminal, stderr shows progress;
//! stdout gets a summary line and one line per refused row.

use super::ImportFileFormat;
use crate::config::Settings;
use crate::domain::phone::Country;
use crate::service::import::{ImportFormat, ImportReport, Importer};
use anyhow::{Context as _, bail};
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes read from the file at a time.
const BLOCK: usize = 256 * 1024;

/// Runs the import and prints the result.
///
/// # Errors
/// An unknown format, an unreadable file, a store that cannot be opened, an unusable
/// CSV header or a store failure (batches committed before it stay).
pub async fn run(
    settings: &Settings,
    file: &Path,
    format: Option<ImportFileFormat>,
) -> anyhow::Result<()> {
    let format = match format {
        Some(ImportFileFormat::Csv) => ImportFormat::Csv,
        Some(ImportFileFormat::Ndjson) => ImportFormat::Ndjson,
        None => format_of(file)?,
    };
    let mut input =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let size = input.metadata().map(|m| m.len()).ok();
    let country = Country::parse(&settings.phone.default_country)
        .context("phone.default_country must be an ISO 3166 alpha-2 code")?;
    let store = crate::store::open(&settings.store.url).await?;
    let started = Instant::now();
    let mut importer = Importer::new(store, country, format);
    let mut progress = Progress::on_terminal(size);
    let mut block = vec![0u8; BLOCK];
    let mut read = 0u64;
    loop {
        // A blocking read is fine here: this command is the process's only task.
        let n = match input.read(&mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                progress.clear();
                return Err(e).with_context(|| {
                    format!(
                        "reading {} after {read} bytes (rows before were imported: {})",
                        file.display(),
                        counts(importer.report())
                    )
                });
            }
        };
        read += n as u64;
        let pushed = importer.push(&block[..n]).await;
        if pushed.is_err() {
            progress.clear();
        }
        pushed.with_context(|| format!("importing {}", file.display()))?;
        progress.show(read, importer.report());
    }
    let report = importer.finish().await;
    progress.clear();
    let report = report.with_context(|| format!("importing {}", file.display()))?;
    print_report(file, &report, started.elapsed());
    Ok(())
}

fn format_of(file: &Path) -> anyhow::Result<ImportFormat> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => Ok(ImportFormat::Csv),
        Some("ndjson" | "jsonl") => Ok(ImportFormat::Ndjson),
        _ => bail!(
            "cannot tell the format of {} from its name; pass --format csv or --format ndjson",
            file.display()
        ),
    }
}

fn counts(r: &ImportReport) -> String {
    format!(
        "{} created, {} updated, {} failed",
        r.created, r.updated, r.failed
    )
}

fn print_report(file: &Path, r: &ImportReport, took: Duration) {
    let mut out = std::io::stdout().lock();
    let secs = took.as_secs_f64();
    let rows = r.created + r.updated + r.failed;
    let _ = writeln!(
        out,
        "imported {}: {} ({rows} rows in {secs:.1} s, {:.0} rows/min)",
        file.display(),
        counts(r),
        if secs > 0.0 {
            rows as f64 * 60.0 / secs
        } else {
            0.0
        }
    );
    for e in &r.errors {
        let _ = match &e.field {
            Some(f) => writeln!(out, "row {}, field {f}: {}", e.row, e.message),
            None => writeln!(out, "row {}: {}", e.row, e.message),
        };
    }
    let unlisted = r.failed.saturating_sub(r.errors.len() as u64);
    if unlisted > 0 {
        let _ = writeln!(out, "... and {unlisted} more refused rows not listed");
    }
}

/// A one-line progress indicator on stderr, redrawn at most every 200 ms; silent when
/// stderr is not a terminal (logs and pipes get only the result).
struct Progress {
    enabled: bool,
    size: Option<u64>,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    fn on_terminal(size: Option<u64>) -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            size,
            started: Instant::now(),
            last: None,
        }
    }

    fn show(&mut self, read: u64, r: &ImportReport) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        let rows = r.created + r.updated + r.failed;
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let part = match self.size.filter(|s| *s > 0) {
            Some(s) => {
                let pct = (read.min(s) * 100) / s;
                let filled = usize::try_from(pct / 5).unwrap_or(20);
                format!(
                    "[{}{}] {pct:>3}% {:.1}/{:.1} MiB",
                    "#".repeat(filled),
                    ".".repeat(20 - filled.min(20)),
                    mib(read),
                    mib(s)
                )
            }
            None => format!("{:.1} MiB", mib(read)),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{part}  {rows} rows ({:.0}/s)",
            rows as f64 / secs
        );
        let _ = err.flush();
    }

    fn clear(&mut self) {
        if self.enabled && self.last.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
