//! JSONL reader: one JSON object per line; blank lines and a missing final newline are fine;
//! a line that is not a JSON object is reported with its line number, and reading goes on.

use std::io::BufRead;

use serde_json::{Map, Value};

use crate::model::LineHash;
use crate::read::csv::SkipCounts;

/// Lines longer than this are reported and skipped rather than held in memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Streams the lines of a JSONL file.
pub struct JsonlReader {
    input: Box<dyn BufRead + Send>,
    buf: Vec<u8>,
    line: u64,
    max_line: usize,
    pub skipped: SkipCounts,
}

/// One non-blank line: a JSON object, or why it is not one.
pub type JsonLine = Result<Map<String, Value>, String>;

impl JsonlReader {
    pub fn new(input: Box<dyn BufRead + Send>) -> JsonlReader {
        JsonlReader {
            input,
            buf: Vec::with_capacity(4096),
            line: 0,
            max_line: MAX_LINE_BYTES,
            skipped: SkipCounts::default(),
        }
    }

    /// The next non-blank line with its number and content hash.
    pub fn next_record(&mut self) -> std::io::Result<Option<(u64, LineHash, JsonLine)>> {
        loop {
            let (n, cut) = super::read_line_limited(&mut self.input, &mut self.buf, self.max_line)?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if cut {
                let msg = format!(
                    "line is longer than {} MiB: it is skipped; split the export into \
                     smaller lines",
                    self.max_line / (1024 * 1024)
                );
                return Ok(Some((self.line, LineHash::of(msg.as_bytes()), Err(msg))));
            }
            let text = self.buf.trim_ascii();
            if text.is_empty() {
                self.skipped.blank += 1;
                continue;
            }
            let parsed = match serde_json::from_slice::<Value>(text) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(other) => Err(format!(
                    "is JSON but not an object ({}): each line must be one {{…}} object",
                    kind_name(&other)
                )),
                Err(_) if std::str::from_utf8(text).is_err() => Err(super::not_utf8_message(text)),
                Err(e) => Err(format!("is not valid JSON ({e}); fix or remove the line")),
            };
            // Sorted keys (serde_json's map is ordered) and exact numbers: key order and
            // spacing do not change the hash.
            let hash = match &parsed {
                Ok(map) => LineHash::of(&serde_json::to_vec(map).unwrap_or_default()),
                Err(_) => LineHash::of(text),
            };
            return Ok(Some((self.line, hash, parsed)));
        }
    }
}

pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &'static [u8]) -> Vec<(u64, Result<String, String>)> {
        let mut r = JsonlReader::new(Box::new(data));
        let mut out = Vec::new();
        while let Some((line, _, rec)) = r.next_record().unwrap() {
            out.push((line, rec.map(|m| Value::Object(m).to_string())));
        }
        out
    }

    #[test]
    fn blank_lines_crlf_and_no_final_newline() {
        let got = lines(b"{\"a\":1}\r\n\n  \n{\"b\":\"x\\/y\"}");
        assert_eq!(
            got,
            vec![
                (1, Ok("{\"a\":1}".into())),
                (4, Ok("{\"b\":\"x/y\"}".into()))
            ]
        );
    }

    #[test]
    fn bad_lines_are_reported_and_reading_goes_on() {
        let got = lines(b"[1]\n{oops\n\"x\xE9\"\n{\"ok\":true}\n");
        assert_eq!(got.len(), 4);
        assert!(got[0].1.as_ref().unwrap_err().contains("not an object"));
        assert!(got[1].1.as_ref().unwrap_err().contains("not valid JSON"));
        assert!(got[2].1.as_ref().unwrap_err().contains("windows-1252"));
        assert_eq!(got[3], (4, Ok("{\"ok\":true}".into())));
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let got = lines(b"{\"Amount\": 6.990000000000000000001}\n");
        assert_eq!(got[0].1, Ok("{\"Amount\":6.990000000000000000001}".into()));
    }

    #[test]
    fn hash_ignores_key_order_and_spacing() {
        let hash = |d: &'static [u8]| {
            JsonlReader::new(Box::new(d))
                .next_record()
                .unwrap()
                .unwrap()
                .1
        };
        assert_eq!(
            hash(b"{\"a\":1,\"b\":2}"),
            hash(b"{ \"b\": 2, \"a\": 1 }\r\n")
        );
        assert_ne!(hash(b"{\"a\":1}"), hash(b"{\"a\":2}"));
    }
}
