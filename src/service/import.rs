//! Lead import (SPEC 6 "Lead import"): a CSV or NDJSON file pushed in chunks of any
//! size into an [`Importer`], rows validated exactly as `POST /api/v1/leads` validates
//! ([`LeadRequest::parse`]) and written [`BATCH_ROWS`] at a time, one transaction per
//! batch ([`crate::store::Store::import_leads`], which matches rows to existing leads).
//! Both `POST /api/v1/leads/import` and the `import-leads` command drive an `Importer`.
//!
//! A row gives the fields of its non-empty CSV cells (or its NDJSON keys): a new lead
//! gets just those; a matched lead gets those replaced, its custom fields merged by key,
//! everything else kept. A row that gives nothing is refused.

mod records;

use crate::domain::ids::UserId;
use crate::domain::lead::LeadField;
use crate::domain::phone::Country;
use crate::service::directory::{DirectoryError, LeadRequest, from_value};
use crate::store::{DynStore, GivenFields, ImportOutcome, LeadPatch, StoreError};
use records::{CsvRecords, Lines, Record};
use serde::Serialize;
use std::collections::HashSet;

/// Rows written per transaction: large enough to amortise the commit, small enough
/// that popups waiting for the write lock wait milliseconds, not seconds.
pub const BATCH_ROWS: usize = 200;

/// At most this many row errors are reported; `failed` counts them all.
pub const MAX_REPORTED_ERRORS: usize = 1000;

/// The two import formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// `text/csv`: a header row of lead field names, `fields.<key>` for custom fields,
    /// `secondary_numbers` separated by `;`.
    Csv,
    /// `application/x-ndjson`: one `POST /api/v1/leads` object per line.
    Ndjson,
}

/// What an import did (`POST /api/v1/leads/import` answer).
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Leads created.
    pub created: u64,
    /// Existing leads matched by `external_id` or email (changed or not).
    pub updated: u64,
    /// Rows refused.
    pub failed: u64,
    /// Why, in row order; the first 1000 only.
    pub errors: Vec<RowError>,
}

/// One refused row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// The 1-based line of the file the row starts on (the CSV header is line 1).
    pub row: u64,
    /// The column or JSON path at fault (e.g. `email`, `secondary_numbers[1]`,
    /// `fields.x`); null when the row as a whole is unreadable.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The CSV header cannot be used; nothing was imported (422).
    #[error("{message}")]
    Header {
        /// The column at fault, when one is.
        column: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The store failed; batches committed before stay.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A lead column of a CSV header or key of an NDJSON object (custom fields aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeadColumn {
    FirstName,
    LastName,
    Email,
    Phone,
    Mobile,
    SecondaryNumbers,
    OwnerId,
    Source,
    Origin,
    Stage,
    ExternalId,
}

impl LeadColumn {
    const ALL: [(&'static str, Self); 11] = [
        ("first_name", Self::FirstName),
        ("last_name", Self::LastName),
        ("email", Self::Email),
        ("phone", Self::Phone),
        ("mobile", Self::Mobile),
        ("secondary_numbers", Self::SecondaryNumbers),
        ("owner_id", Self::OwnerId),
        ("source", Self::Source),
        ("origin", Self::Origin),
        ("stage", Self::Stage),
        ("external_id", Self::ExternalId),
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    /// The column's name as a header or key spells it.
    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("", |(n, _)| n)
    }

    fn mark(self, g: &mut GivenFields) {
        let flag = match self {
            Self::FirstName => &mut g.first_name,
            Self::LastName => &mut g.last_name,
            Self::Email => &mut g.email,
            Self::Phone => &mut g.phone,
            Self::Mobile => &mut g.mobile,
            Self::SecondaryNumbers => &mut g.secondary_numbers,
            Self::OwnerId => &mut g.owner_id,
            Self::Source => &mut g.source,
            Self::Origin => &mut g.origin,
            Self::Stage => &mut g.stage,
            Self::ExternalId => &mut g.external_id,
        };
        *flag = true;
    }

    /// Puts a CSV cell into the request, as the JSON body would carry it.
    fn set(self, req: &mut LeadRequest, cell: String) -> Result<(), (String, String)> {
        let slot = match self {
            Self::FirstName => &mut req.first_name,
            Self::LastName => &mut req.last_name,
            Self::Email => &mut req.email,
            Self::Phone => &mut req.phone,
            Self::Mobile => &mut req.mobile,
            Self::Source => &mut req.source,
            Self::Origin => &mut req.origin,
            Self::Stage => &mut req.stage,
            Self::ExternalId => &mut req.external_id,
            Self::SecondaryNumbers => {
                req.secondary_numbers = cell.split(';').map(str::to_owned).collect();
                return Ok(());
            }
            Self::OwnerId => {
                let id =
                    UserId::parse(&cell).map_err(|e| ("owner_id".to_owned(), e.to_string()))?;
                req.owner_id = Some(id);
                return Ok(());
            }
        };
        *slot = Some(cell);
        Ok(())
    }
}

/// A CSV column.
#[derive(Clone, Debug)]
enum Column {
    Lead(LeadColumn),
    Custom(String),
}

/// Reads the header row; nothing is imported when it cannot be used.
fn header(cells: Vec<String>) -> Result<Vec<Column>, ImportError> {
    let bad = |column: &str, message: String| ImportError::Header {
        column: Some(column.to_owned()),
        message,
    };
    let mut seen = HashSet::new();
    let mut columns = Vec::with_capacity(cells.len());
    for (i, raw) in cells.iter().enumerate() {
        let name = raw.trim();
        if name.is_empty() {
            return Err(ImportError::Header {
                column: None,
                message: format!("column {} of the header has no name", i + 1),
            });
        }
        let column = match name.strip_prefix("fields.") {
            Some(key) => match LeadField::parse(key) {
                Ok(LeadField::Custom(k)) => Column::Custom(k),
                _ => {
                    return Err(bad(
                        name,
                        format!("column \"{name}\": custom field names must not be empty or lead field names"),
                    ));
                }
            },
            None => Column::Lead(LeadColumn::parse(name).ok_or_else(|| {
                bad(
                    name,
                    format!(
                        "unknown column \"{name}\": columns are {}, or fields.<key> for a custom field",
                        LeadColumn::ALL.map(|(n, _)| n).join(", ")
                    ),
                )
            })?),
        };
        if !seen.insert(name) {
            return Err(bad(name, format!("column \"{name}\" appears twice")));
        }
        columns.push(column);
    }
    Ok(columns)
}

/// A row read and checked, waiting for its batch.
enum Pending {
    Valid { line: u64, patch: Box<LeadPatch> },
    Refused(RowError),
}

enum Reader {
    Csv {
        records: CsvRecords,
        columns: Option<Vec<Column>>,
    },
    Ndjson(Lines),
}

/// One import in progress: [`Importer::push`] the file's bytes, then
/// [`Importer::finish`].
pub struct Importer {
    store: DynStore,
    country: Country,
    reader: Reader,
    batch: Vec<Pending>,
    valid_in_batch: usize,
    report: ImportReport,
}

impl Importer {
    /// A new import into `store`; numbers are read with `country`.
    pub fn new(store: DynStore, country: Country, format: ImportFormat) -> Self {
        let reader = match format {
            ImportFormat::Csv => Reader::Csv {
                records: CsvRecords::default(),
                columns: None,
            },
            ImportFormat::Ndjson => Reader::Ndjson(Lines::default()),
        };
        Self {
            store,
            country,
            reader,
            batch: Vec::new(),
            valid_in_batch: 0,
            report: ImportReport::default(),
        }
    }

    /// What the batches written so far did.
    pub fn report(&self) -> &ImportReport {
        &self.report
    }

    /// Reads the next bytes of the file, writing each batch as it fills.
    ///
    /// # Errors
    /// [`ImportError::Header`] for an unusable CSV header; store failures.
    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), ImportError> {
        self.read(chunk, false).await
    }

    /// Reads the end of the file and writes the last batch.
    ///
    /// # Errors
    /// As [`Importer::push`].
    pub async fn finish(mut self) -> Result<ImportReport, ImportError> {
        self.read(&[], true).await?;
        self.flush().await?;
        Ok(self.report)
    }

    async fn read(&mut self, chunk: &[u8], end: bool) -> Result<(), ImportError> {
        match &mut self.reader {
            Reader::Csv { records, .. } => {
                let mut out = Vec::new();
                records.push(chunk, &mut out);
                if end {
                    records.finish(&mut out);
                }
                for r in out {
                    self.csv_record(r)?;
                    self.flush_when_full().await?;
                }
            }
            Reader::Ndjson(lines) => {
                let mut out = Vec::new();
                lines.push(chunk, &mut out);
                if end {
                    lines.finish(&mut out);
                }
                for r in out {
                    let pending = self.ndjson_line(r);
                    self.queue(pending);
                    self.flush_when_full().await?;
                }
            }
        }
        Ok(())
    }

    fn csv_record(&mut self, r: Record<Vec<String>>) -> Result<(), ImportError> {
        let Reader::Csv { columns, .. } = &mut self.reader else {
            return Ok(());
        };
        let Some(cols) = columns.as_ref() else {
            let cells = r.content.map_err(|message| ImportError::Header {
                column: None,
                message: format!("the header (line {}) cannot be read: {message}", r.line),
            })?;
            *columns = Some(header(cells)?);
            return Ok(());
        };
        let pending = match r.content {
            Err(message) => refused(r.line, None, message),
            Ok(cells) => csv_row(cols, r.line, cells, self.country),
        };
        self.queue(pending);
        Ok(())
    }

    fn ndjson_line(&self, r: Record<Vec<u8>>) -> Pending {
        let bytes = match r.content {
            Ok(b) => b,
            Err(message) => return refused(r.line, None, message),
        };
        let value: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return refused(r.line, None, format!("malformed JSON: {e}")),
        };
        let Some(object) = value.as_object() else {
            return refused(r.line, None, "each line must be a JSON object".into());
        };
        let mut given = GivenFields::default();
        for key in object.keys() {
            if let Some(c) = LeadColumn::parse(key) {
                c.mark(&mut given);
            }
        }
        match from_value::<LeadRequest>(value) {
            Ok(req) => validated(r.line, req, given, self.country),
            Err(e) => invalid_row(r.line, e),
        }
    }

    fn queue(&mut self, p: Pending) {
        if matches!(p, Pending::Valid { .. }) {
            self.valid_in_batch += 1;
        }
        self.batch.push(p);
    }

    async fn flush_when_full(&mut self) -> Result<(), ImportError> {
        // refused rows count too, so a file of bad rows does not pile up in memory
        if self.valid_in_batch >= BATCH_ROWS || self.batch.len() >= 4 * BATCH_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the valid rows of the batch and reports every row in order.
    async fn flush(&mut self) -> Result<(), ImportError> {
        let batch = std::mem::take(&mut self.batch);
        self.valid_in_batch = 0;
        let mut patches = Vec::new();
        let mut order = Vec::with_capacity(batch.len());
        for p in batch {
            match p {
                Pending::Valid { line, patch } => {
                    patches.push(*patch);
                    order.push(Ok(line));
                }
                Pending::Refused(e) => order.push(Err(e)),
            }
        }
        let outcomes = if patches.is_empty() {
            Vec::new()
        } else {
            self.store.import_leads(&patches).await?
        };
        let mut outcomes = outcomes.into_iter();
        for item in order {
            match item.map(|line| (line, outcomes.next())) {
                Err(e) => self.fail(e),
                Ok((_, Some(ImportOutcome::Created(_)))) => self.report.created += 1,
                Ok((_, Some(ImportOutcome::Updated(_)))) => self.report.updated += 1,
                Ok((line, Some(ImportOutcome::Refused(e)))) => self.fail(store_refusal(line, e)),
                Ok((_, None)) => {
                    return Err(StoreError::Unavailable(anyhow::anyhow!(
                        "BUG: the store answered fewer outcomes than rows"
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: RowError) {
        self.report.failed += 1;
        if self.report.errors.len() < MAX_REPORTED_ERRORS {
            self.report.errors.push(e);
        }
    }
}

fn refused(row: u64, field: Option<String>, message: String) -> Pending {
    Pending::Refused(RowError {
        row,
        field,
        message,
    })
}

fn invalid_row(row: u64, e: DirectoryError) -> Pending {
    match e {
        DirectoryError::Invalid { field, message } => refused(row, Some(field), message),
        DirectoryError::Shape(field, message) => {
            refused(row, Some(field).filter(|f| !f.is_empty()), message)
        }
        DirectoryError::Store(e) => refused(row, None, e.to_string()),
    }
}

fn store_refusal(row: u64, e: StoreError) -> RowError {
    let (field, message) = match e {
        StoreError::UnknownReference { field } => {
            let message = format!("{field} does not exist");
            (Some(field), message)
        }
        StoreError::Conflict { field, .. } => {
            let message = format!("{field} is already in use");
            (Some(field), message)
        }
        StoreError::NotFound => (None, "the matched lead was deleted meanwhile".into()),
        StoreError::Unavailable(_) => (None, "the store failed".into()),
    };
    RowError {
        row,
        field,
        message,
    }
}

/// A CSV data row as the JSON body of `POST /api/v1/leads` would carry it.
fn csv_row(columns: &[Column], line: u64, cells: Vec<String>, country: Country) -> Pending {
    if cells.len() != columns.len() {
        return refused(
            line,
            None,
            format!(
                "the row has {} values; the header has {} columns",
                cells.len(),
                columns.len()
            ),
        );
    }
    let mut req = LeadRequest::default();
    let mut given = GivenFields::default();
    for (column, cell) in columns.iter().zip(cells) {
        if cell.trim().is_empty() {
            continue;
        }
        if cell.contains('\0') {
            let field = match column {
                Column::Lead(c) => c.name().to_owned(),
                Column::Custom(key) => format!("fields.{key}"),
            };
            return refused(
                line,
                Some(field),
                "contains a NUL character, which no field may hold".into(),
            );
        }
        match column {
            Column::Lead(c) => {
                c.mark(&mut given);
                if let Err((field, message)) = c.set(&mut req, cell) {
                    return refused(line, Some(field), message);
                }
            }
            Column::Custom(key) => {
                req.fields.insert(key.clone(), cell);
            }
        }
    }
    validated(line, req, given, country)
}

/// Validates a row exactly as `POST /api/v1/leads` does.
fn validated(line: u64, req: LeadRequest, given: GivenFields, country: Country) -> Pending {
    if given.is_empty() && req.fields.is_empty() {
        return refused(line, None, "the row has no values".into());
    }
    match req.parse(country) {
        Ok(values) => Pending::Valid {
            line,
            patch: Box::new(LeadPatch { values, given }),
        },
        Err(e) => invalid_row(line, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn header_error(names: &[&str]) -> (Option<String>, String) {
        match header(cells(names)) {
            Err(ImportError::Header { column, message }) => (column, message),
            other => panic!("expected a header error, got {:?}", other.map(|c| c.len())),
        }
    }

    #[test]
    fn headers_name_the_column_at_fault() {
        assert_eq!(
            header(cells(&["email", " phone ", "fields.Budget"]))
                .map(|c| c.len())
                .ok(),
            Some(3)
        );
        assert_eq!(
            header_error(&["email", "emial"]).0.as_deref(),
            Some("emial")
        );
        assert_eq!(header_error(&["id"]).0.as_deref(), Some("id"));
        assert_eq!(
            header_error(&["fields.stage"]).0.as_deref(),
            Some("fields.stage")
        );
        assert_eq!(header_error(&["fields."]).0.as_deref(), Some("fields."));
        assert!(header_error(&["email", "email"]).1.contains("twice"));
        assert_eq!(header_error(&["email", ""]).0, None);
    }

    fn country() -> Country {
        Country::parse("IN").expect("IN")
    }

    #[test]
    fn a_csv_row_gives_only_its_non_empty_cells() {
        let columns = header(cells(&[
            "first_name",
            "email",
            "secondary_numbers",
            "fields.Budget",
        ]))
        .expect("header");
        let Pending::Valid { patch, .. } = csv_row(
            &columns,
            2,
            cells(&["Asha", "", "8611795988;;+91 86117 95989", "10k"]),
            country(),
        ) else {
            panic!("row refused");
        };
        assert!(patch.given.first_name && patch.given.secondary_numbers);
        assert!(!patch.given.email);
        let numbers: Vec<&str> = patch
            .values
            .secondary_numbers
            .iter()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(numbers, ["+918611795988", "+918611795989"]);
        assert_eq!(patch.values.fields["Budget"], "10k");
    }

    #[test]
    fn csv_rows_are_refused_with_the_field_post_would_name() {
        let columns = header(cells(&["email", "secondary_numbers", "owner_id"])).expect("header");
        let field = |row: &[&str]| match csv_row(&columns, 7, cells(row), country()) {
            Pending::Refused(e) => {
                assert_eq!(e.row, 7);
                e.field
            }
            Pending::Valid { .. } => panic!("row kept"),
        };
        assert_eq!(field(&["nope", "", ""]).as_deref(), Some("email"));
        assert_eq!(
            field(&["", "8611795988;12", ""]).as_deref(),
            Some("secondary_numbers[1]")
        );
        assert_eq!(field(&["", "", "x"]).as_deref(), Some("owner_id"));
        assert_eq!(field(&["", "", ""]), None);
        assert_eq!(field(&["a@b.c", ""]), None);
    }
}
