//! Newline-delimited JSON events on stdout, shaped as Kafka's verifiable clients print them: every
//! object starts with `timestamp` (milliseconds since the epoch) and `name`, then the event's fields.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Milliseconds since the Unix epoch, as Java's `System.currentTimeMillis()`.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An event without fields of its own (`startup_complete`, `shutdown_complete`).
#[derive(Serialize)]
pub(crate) struct NoFields {}

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    timestamp: u64,
    name: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// Writes one event per line. Each line is written and flushed under stdout's lock, so lines from
/// different tasks never interleave; callers that need an order between events (records before a
/// commit) hold their own lock across the writes.
pub(crate) fn emit<T: Serialize>(name: &str, body: &T) {
    let line = Line {
        timestamp: now_ms(),
        name,
        body,
    };
    let Ok(text) = serde_json::to_string(&line) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    // A closed stdout (the harness went away) is not worth dying for mid-shutdown: ignore it.
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Body {
        count: u32,
    }

    #[test]
    fn timestamp_and_name_come_first() {
        let line = Line {
            timestamp: 7,
            name: "records_consumed",
            body: &Body { count: 3 },
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"timestamp":7,"name":"records_consumed","count":3}"#
        );
        let empty = Line {
            timestamp: 1,
            name: "startup_complete",
            body: &NoFields {},
        };
        assert_eq!(
            serde_json::to_string(&empty).unwrap(),
            r#"{"timestamp":1,"name":"startup_complete"}"#
        );
    }
}
