//! Incremental readers for the lead import: bytes arrive in chunks of any size (a
//! streamed HTTP body, a file read block by block) and come out as records, each with
//! the 1-based line it starts on. [`CsvRecords`] reads RFC 4180 CSV (quoted values may
//! hold commas, `""` and line breaks; CRLF or LF); [`Lines`] splits NDJSON. Neither
//! ever holds more than one record, and a record is cut at [`MAX_RECORD_BYTES`].

/// The longest record kept; a longer one is reported as an error for its line.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One record of the file.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<T> {
    /// The 1-based line the record starts on.
    pub line: u64,
    /// Its content, or why it cannot be read.
    pub content: Result<T, String>,
}

/// Drops a UTF-8 byte order mark at the start of the input, whatever the chunks.
#[derive(Debug, Default)]
struct Bom {
    /// Bytes of the mark matched so far.
    matched: usize,
    done: bool,
}

impl Bom {
    /// Splits `chunk` into bytes held back earlier as a possible mark that turn out
    /// not to be one, and the rest of `chunk` once the mark is settled.
    fn strip<'c>(&mut self, mut chunk: &'c [u8]) -> (&'static [u8], &'c [u8]) {
        while !self.done {
            let Some((&b, rest)) = chunk.split_first() else {
                return (&[], chunk);
            };
            if b == BOM[self.matched] {
                self.matched += 1;
                self.done = self.matched == BOM.len();
                chunk = rest;
            } else {
                self.done = true;
                return (&BOM[..self.matched], chunk);
            }
        }
        (&[], chunk)
    }

    /// At the end of the input: bytes held back as a possible mark.
    fn finish(&mut self) -> &'static [u8] {
        if self.done {
            return &[];
        }
        self.done = true;
        &BOM[..self.matched]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing of the current value read yet.
    FieldStart,
    /// Inside a value that did not start with a quote.
    Unquoted,
    /// Inside a quoted value.
    Quoted,
    /// A quote inside a quoted value: an escaped `""` or the closing quote.
    QuoteInQuoted,
}

/// An incremental CSV reader: [`CsvRecords::push`] chunks, then [`CsvRecords::finish`].
/// Blank lines are skipped (they still count as lines); a UTF-8 byte order mark at the
/// start is dropped.
#[derive(Debug)]
pub struct CsvRecords {
    state: State,
    value: Vec<u8>,
    values: Vec<Vec<u8>>,
    /// Bytes of the current record, to cut runaway records.
    record_bytes: usize,
    /// Whether the current record had a quoted value (then it is not blank).
    quoted: bool,
    problem: Option<String>,
    line: u64,
    record_line: u64,
    bom: Bom,
}

impl Default for CsvRecords {
    fn default() -> Self {
        Self {
            state: State::FieldStart,
            value: Vec::new(),
            values: Vec::new(),
            record_bytes: 0,
            quoted: false,
            problem: None,
            line: 1,
            record_line: 1,
            bom: Bom::default(),
        }
    }
}

impl CsvRecords {
    /// Reads a chunk; complete records are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Record<Vec<String>>>) {
        let (held, chunk) = self.bom.strip(chunk);
        for &b in held.iter().chain(chunk) {
            self.byte(b, out);
        }
    }

    /// Ends the input: the last record, when it has no line break after it.
    pub fn finish(&mut self, out: &mut Vec<Record<Vec<String>>>) {
        for &b in self.bom.finish() {
            self.byte(b, out);
        }
        match self.state {
            State::Quoted => {
                out.push(Record {
                    line: self.record_line,
                    content: Err("a quoted value is not closed before the end of the file".into()),
                });
                self.reset_record();
            }
            _ if self.record_bytes > 0 => self.end_record(out),
            _ => {}
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<Record<Vec<String>>>) {
        self.record_bytes += 1;
        if self.record_bytes > MAX_RECORD_BYTES && self.problem.is_none() {
            self.problem = Some(format!("the row is longer than {MAX_RECORD_BYTES} bytes"));
        }
        match (self.state, b) {
            (State::FieldStart, b'"') => {
                self.state = State::Quoted;
                self.quoted = true;
            }
            (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b',') => {
                self.end_value();
                self.state = State::FieldStart;
            }
            (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b'\n') => {
                if self.state != State::QuoteInQuoted && self.value.last() == Some(&b'\r') {
                    self.value.pop();
                }
                self.end_record(out);
                self.line += 1;
                self.record_line = self.line;
            }
            (State::FieldStart | State::Unquoted, _) => {
                self.keep(b);
                self.state = State::Unquoted;
            }
            (State::Quoted, b'"') => self.state = State::QuoteInQuoted,
            (State::Quoted, _) => {
                if b == b'\n' {
                    self.line += 1;
                }
                self.keep(b);
            }
            (State::QuoteInQuoted, b'"') => {
                self.keep(b'"');
                self.state = State::Quoted;
            }
            // the CR of a CRLF after a closing quote
            (State::QuoteInQuoted, b'\r') => {}
            (State::QuoteInQuoted, _) => {
                if self.problem.is_none() {
                    self.problem = Some(
                        "a quoted value must be followed by a comma or the end of the line".into(),
                    );
                }
                self.keep(b);
                self.state = State::Unquoted;
            }
        }
    }

    fn keep(&mut self, b: u8) {
        if self.problem.is_none() {
            self.value.push(b);
        }
    }

    fn end_value(&mut self) {
        self.values.push(std::mem::take(&mut self.value));
    }

    fn end_record(&mut self, out: &mut Vec<Record<Vec<String>>>) {
        self.end_value();
        let blank = !self.quoted && self.values.len() == 1 && self.values[0].is_empty();
        if !blank {
            let content = match self.problem.take() {
                Some(p) => Err(p),
                None => std::mem::take(&mut self.values)
                    .into_iter()
                    .map(String::from_utf8)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| "the row is not valid UTF-8".to_owned()),
            };
            out.push(Record {
                line: self.record_line,
                content,
            });
        }
        self.reset_record();
    }

    fn reset_record(&mut self) {
        self.values.clear();
        self.value.clear();
        self.record_bytes = 0;
        self.quoted = false;
        self.problem = None;
        self.state = State::FieldStart;
    }
}

/// An incremental line splitter for NDJSON: [`Lines::push`] chunks, then
/// [`Lines::finish`]. Lines hold their bytes without the line break (LF or CRLF);
/// blank lines are skipped; a UTF-8 byte order mark at the start is dropped.
#[derive(Debug)]
pub struct Lines {
    buf: Vec<u8>,
    too_long: bool,
    line: u64,
    bom: Bom,
}

impl Default for Lines {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            too_long: false,
            line: 1,
            bom: Bom::default(),
        }
    }
}

impl Lines {
    /// Reads a chunk; complete lines are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Record<Vec<u8>>>) {
        let (held, chunk) = self.bom.strip(chunk);
        self.keep(held);
        for (i, piece) in chunk.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                self.end_line(out);
            }
            self.keep(piece);
        }
    }

    /// Ends the input: the last line, when it has no line break after it.
    pub fn finish(&mut self, out: &mut Vec<Record<Vec<u8>>>) {
        let held = self.bom.finish();
        self.keep(held);
        if !self.buf.is_empty() || self.too_long {
            self.end_line(out);
        }
    }

    fn keep(&mut self, piece: &[u8]) {
        if self.too_long {
            return;
        }
        if self.buf.len() + piece.len() > MAX_RECORD_BYTES {
            self.too_long = true;
            self.buf.clear();
        } else {
            self.buf.extend_from_slice(piece);
        }
    }

    fn end_line(&mut self, out: &mut Vec<Record<Vec<u8>>>) {
        let line = self.line;
        self.line += 1;
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.too_long {
            self.too_long = false;
            out.push(Record {
                line,
                content: Err(format!("the line is longer than {MAX_RECORD_BYTES} bytes")),
            });
        } else if !self.buf.iter().all(u8::is_ascii_whitespace) {
            out.push(Record {
                line,
                content: Ok(std::mem::take(&mut self.buf)),
            });
        }
        self.buf.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn csv_in_chunks(input: &str, chunk: usize) -> Vec<Record<Vec<String>>> {
        let mut r = CsvRecords::default();
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(chunk) {
            r.push(c, &mut out);
        }
        r.finish(&mut out);
        out
    }

    fn ok(line: u64, cells: &[&str]) -> Record<Vec<String>> {
        Record {
            line,
            content: Ok(cells.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn csv_records_are_the_same_whatever_the_chunk_size() {
        let input = "\u{feff}a,b,c\r\n1,\"x, y\",\"say \"\"hi\"\"\"\r\n\r\n2,\"two\nlines\",\n3,,\"\"\n4,z,last";
        let expected = vec![
            ok(1, &["a", "b", "c"]),
            ok(2, &["1", "x, y", "say \"hi\""]),
            ok(4, &["2", "two\nlines", ""]),
            ok(6, &["3", "", ""]),
            ok(7, &["4", "z", "last"]),
        ];
        for chunk in [1, 2, 3, 5, 7, 64, 4096] {
            assert_eq!(csv_in_chunks(input, chunk), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn csv_problems_are_reported_on_the_line_the_record_starts() {
        let out = csv_in_chunks("a,b\n\"x\"y,1\nok,2\n\"open,3\nmore", 4);
        assert_eq!(out[0], ok(1, &["a", "b"]));
        assert_eq!(out[1].line, 2);
        assert!(
            out[1]
                .content
                .as_ref()
                .unwrap_err()
                .contains("quoted value")
        );
        assert_eq!(out[2], ok(3, &["ok", "2"]));
        assert_eq!(out[3].line, 4);
        assert!(out[3].content.as_ref().unwrap_err().contains("not closed"));
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn csv_keeps_a_quote_inside_an_unquoted_value_and_rejects_bad_utf8() {
        let out = csv_in_chunks("5\" screen,a\n", 3);
        assert_eq!(out, vec![ok(1, &["5\" screen", "a"])]);
        let mut r = CsvRecords::default();
        let mut out = Vec::new();
        r.push(b"a,\xff\n", &mut out);
        assert_eq!(out[0].content, Err("the row is not valid UTF-8".into()));
    }

    #[test]
    fn a_partial_byte_order_mark_is_kept_as_data() {
        let mut r = CsvRecords::default();
        let mut out = Vec::new();
        r.push(b"\xEF", &mut out);
        r.push(b"\xBBx,y\n", &mut out);
        assert_eq!(out[0].content, Err("the row is not valid UTF-8".into()));
        let out = lines_in_chunks(b"\xEF\xBB", 1);
        assert_eq!(out[0].content, Ok(b"\xEF\xBB".to_vec()));
    }

    #[test]
    fn csv_cuts_runaway_records() {
        let mut r = CsvRecords::default();
        let mut out = Vec::new();
        r.push(b"\"", &mut out);
        r.push(&vec![b'x'; MAX_RECORD_BYTES + 10], &mut out);
        r.push(b"\"\nnext\n", &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[0].content.as_ref().unwrap_err().contains("longer than"));
        assert_eq!(out[1], ok(2, &["next"]));
    }

    /// Writes a table as RFC 4180 CSV, quoting every value that needs it.
    fn write_csv(rows: &[Vec<String>]) -> String {
        let mut out = String::new();
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .map(|c| {
                    if c.contains([',', '"', '\n', '\r']) || c.is_empty() {
                        format!("\"{}\"", c.replace('"', "\"\""))
                    } else {
                        c.clone()
                    }
                })
                .collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn any_table_written_as_csv_reads_back_the_same(
            rows in proptest::collection::vec(
                proptest::collection::vec("[a-z\",\r\n ;é]{0,6}", 3), 1..6),
            chunk in 1usize..17,
        ) {
            let out = csv_in_chunks(&write_csv(&rows), chunk);
            let cells: Vec<Vec<String>> = out.into_iter().map(|r| r.content.unwrap()).collect();
            proptest::prop_assert_eq!(cells, rows);
        }
    }

    fn lines_in_chunks(input: &[u8], chunk: usize) -> Vec<Record<Vec<u8>>> {
        let mut l = Lines::default();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            l.push(c, &mut out);
        }
        l.finish(&mut out);
        out
    }

    #[test]
    fn lines_are_split_and_numbered_whatever_the_chunk_size() {
        let input = b"\xEF\xBB\xBF{\"a\":1}\r\n\n  \n{\"b\":2}\n{\"c\":3}";
        let expected = vec![
            Record {
                line: 1,
                content: Ok(b"{\"a\":1}".to_vec()),
            },
            Record {
                line: 4,
                content: Ok(b"{\"b\":2}".to_vec()),
            },
            Record {
                line: 5,
                content: Ok(b"{\"c\":3}".to_vec()),
            },
        ];
        for chunk in [1, 2, 3, 4, 9, 4096] {
            assert_eq!(lines_in_chunks(input, chunk), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn overlong_lines_are_reported_and_the_next_line_still_read() {
        let mut input = vec![b'x'; MAX_RECORD_BYTES + 1];
        input.extend_from_slice(b"\n{}\n");
        let out = lines_in_chunks(&input, 65536);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].line, 1);
        assert!(out[0].content.is_err());
        assert_eq!(out[1].content, Ok(b"{}".to_vec()));
    }
}
