//! What a send carries, validated before anything is written: a request body (one JSON
//! value, or NDJSON lines; a batch with one bad line is refused whole, naming the line) or a
//! WebSocket frame (one value), UTF-8, each record within what the broker takes.

use bytes::Bytes;
use serde::de::IgnoredAny;

use super::Refused;

/// How many records a request may hold, and how large one may be.
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    /// `limits.max_records_per_request`.
    pub per_request: usize,
    /// The largest record the broker accepts: the producer's `message.max.bytes` less room
    /// for the record's key, headers and batch framing.
    pub record_bytes: usize,
    /// Longest a stored record waits to learn whether its stream was ended before it
    /// (`limits.send_timeout_ms`).
    pub order_timeout: std::time::Duration,
}

/// Room left in `message.max.bytes` for what a record carries beside its value.
pub const RECORD_FRAMING: usize = 1024;

/// How a send body is framed, from its Content-Type.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Single,
    Lines,
}

fn framing(content_type: Option<&str>) -> Result<Framing, Refused> {
    let Some(ct) = content_type else {
        return Ok(Framing::Single);
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Framing::Single),
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
            Ok(Framing::Lines)
        }
        _ => Err(Refused::UnsupportedMediaType(ct.to_string())),
    }
}

/// JSON is UTF-8 (RFC 8259): a body that is not is refused at the door, not stored to fail
/// in processing later (JSON parsers skim over bytes inside strings they do not keep).
fn utf8(body: &[u8]) -> Result<(), Refused> {
    std::str::from_utf8(body).map(|_| ()).map_err(|e| {
        Refused::invalid(format!(
            "body is not UTF-8 (invalid byte at offset {}); JSON must be UTF-8",
            e.valid_up_to()
        ))
    })
}

/// A validated send body: its records, read off the body as they are needed (a record costs
/// no allocation of its own, however many a request holds).
#[derive(Debug)]
pub struct Records {
    body: Bytes,
    framing: Framing,
    pub count: usize,
}

impl Records {
    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let lines: Box<dyn Iterator<Item = &[u8]> + Send> = match self.framing {
            Framing::Single => Box::new(std::iter::once(trim(&self.body))),
            Framing::Lines => Box::new(self.body.split(|b| *b == b'\n').map(trim)),
        };
        lines.filter(|r| !r.is_empty())
    }

    /// The records with their NDJSON line number (1-based; `None` for a single record).
    pub fn numbered(&self) -> impl Iterator<Item = (Option<usize>, &[u8])> + '_ {
        let lines: Box<dyn Iterator<Item = (Option<usize>, &[u8])> + Send> = match self.framing {
            Framing::Single => Box::new(std::iter::once((None, trim(&self.body)))),
            Framing::Lines => Box::new(
                self.body
                    .split(|b| *b == b'\n')
                    .enumerate()
                    .map(|(i, line)| (Some(i + 1), trim(line))),
            ),
        };
        lines.filter(|(_, r)| !r.is_empty())
    }
}

/// Validates a send body: UTF-8, JSON (every line of NDJSON; a batch with one bad line is
/// refused whole), within the record limits.
pub fn records(
    body: &Bytes,
    content_type: Option<&str>,
    limits: RecordLimits,
) -> Result<Records, Refused> {
    let framing = framing(content_type)?;
    utf8(body)?;
    let max = limits.per_request;
    let count = match framing {
        Framing::Single => {
            record(body, limits.record_bytes)?;
            1
        }
        Framing::Lines => {
            let mut count = 0;
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = trim(line);
                if line.is_empty() {
                    continue;
                }
                if count == max {
                    return Err(Refused::TooManyRecords { limit: max });
                }
                fits(line, limits.record_bytes)?;
                serde_json::from_slice::<IgnoredAny>(line).map_err(|e| Refused::Invalid {
                    message: format!(
                        "line {}: not valid JSON: {e}; no record of this batch was stored",
                        i + 1
                    ),
                    line: Some(i + 1),
                })?;
                count += 1;
            }
            if count == 0 {
                return Err(Refused::invalid("body holds no records"));
            }
            count
        }
    };
    Ok(Records {
        body: body.clone(),
        framing,
        count,
    })
}

/// A record the broker would refuse is refused here, naming the limit (not a 503 later).
fn fits(record: &[u8], limit: usize) -> Result<(), Refused> {
    if record.len() > limit {
        return Err(Refused::RecordTooLarge {
            size: record.len(),
            limit,
        });
    }
    Ok(())
}

/// One JSON value (a single-record body, or a WebSocket frame) as a record.
pub fn record(body: &Bytes, limit: usize) -> Result<Bytes, Refused> {
    utf8(body)?;
    fits(body.trim_ascii(), limit)?;
    serde_json::from_slice::<IgnoredAny>(body)
        .map_err(|e| Refused::invalid(format!("body is not valid JSON: {e}")))?;
    Ok(body.slice_ref(trim(body)))
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lim(per_request: usize) -> RecordLimits {
        RecordLimits {
            per_request,
            record_bytes: 1_000,
            order_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_record_larger_than_the_broker_takes_is_refused_naming_the_limit() {
        let big = Bytes::from(format!("\"{}\"", "x".repeat(1_000)));
        let err = records(&big, None, lim(10)).unwrap_err();
        assert!(
            matches!(
                err,
                Refused::RecordTooLarge {
                    size: 1_002,
                    limit: 1_000
                }
            ),
            "{err:?}"
        );
        let lines = Bytes::from(format!("1\n{}\n", String::from_utf8_lossy(&big)));
        assert!(records(&lines, Some("application/x-ndjson"), lim(10)).is_err());
    }

    #[test]
    fn ndjson_names_the_bad_line() {
        let body = Bytes::from_static(b"{\"a\":1}\n\n2\n{oops}\n");
        let err = records(&body, Some("application/x-ndjson"), lim(10)).unwrap_err();
        assert!(err.to_string().starts_with("line 4:"), "{err}");
        assert!(matches!(err, Refused::Invalid { line: Some(4), .. }));
    }

    #[test]
    fn ndjson_skips_blank_lines_and_crlf() {
        let body = Bytes::from_static(b"1\r\n\r\n\"two\"\r\n[3]");
        let recs = records(&body, Some("application/x-ndjson; charset=utf-8"), lim(10)).unwrap();
        assert_eq!(recs.count, 3);
        assert_eq!(
            recs.iter().collect::<Vec<_>>(),
            vec![&b"1"[..], &b"\"two\""[..], &b"[3]"[..]]
        );
    }

    #[test]
    fn json_that_is_not_utf8_is_refused_at_the_door() {
        let body = Bytes::from_static(b"{\"s\":\"\xff\xfe\"}");
        let err = records(&body, None, lim(10)).unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");
        let lines = Bytes::from_static(b"1\n\"\xc3\x28\"\n");
        assert!(records(&lines, Some("application/x-ndjson"), lim(10)).is_err());
    }

    #[test]
    fn content_types() {
        assert!(records(&Bytes::from("{}"), None, lim(10)).is_ok());
        assert!(matches!(
            records(&Bytes::from("{}"), Some("text/plain"), lim(10)),
            Err(Refused::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            records(&Bytes::from("{"), Some("application/json"), lim(10)),
            Err(Refused::Invalid { line: None, .. })
        ));
        assert!(matches!(
            records(
                &Bytes::from("1\n2\n3\n"),
                Some("application/x-ndjson"),
                lim(2)
            ),
            Err(Refused::TooManyRecords { limit: 2 })
        ));
    }
}
