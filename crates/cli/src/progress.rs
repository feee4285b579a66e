//! A one-line progress display on stderr for long `produce` and `consume` runs: shown when stderr is
//! a terminal (or `--progress` asks for it), redrawn once a second, never mixed into stdout.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Counts records and, if enabled, redraws `<verb> N records (R/s)` on stderr every second.
pub(crate) struct Progress {
    count: Arc<AtomicU64>,
    started: Instant,
    verb: &'static str,
    display: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts counting; displays when `forced` or when stderr is a terminal.
    pub(crate) fn start(verb: &'static str, forced: bool) -> Self {
        let count = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let display = (forced || std::io::stderr().is_terminal()).then(|| {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let n = count.load(Ordering::Relaxed);
                    let line = status(verb, n, started.elapsed());
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r{line}").and_then(|()| err.flush());
                }
            })
        });
        Self {
            count,
            started,
            verb,
            display,
        }
    }

    /// Counts `n` more.
    pub(crate) fn add_n(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Records counted so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Stops the display and prints the final count and rate on stderr.
    pub(crate) fn finish(mut self) {
        let line = status(self.verb, self.count(), self.started.elapsed());
        let shown = self.display.is_some();
        if let Some(d) = self.display.take() {
            d.abort();
        }
        if shown {
            eprintln!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

impl Drop for Progress {
    /// Without [`finish`](Progress::finish) (the command failed: its error is the one line on
    /// stderr), the display just stops.
    fn drop(&mut self) {
        if let Some(d) = self.display.take() {
            d.abort();
            eprintln!();
        }
    }
}

fn status(verb: &str, n: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "{verb} {n} records in {:.1} s ({:.0} records/s)",
        elapsed.as_secs_f64(),
        n as f64 / secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_count_time_and_rate() {
        assert_eq!(
            status("produced", 500, Duration::from_secs(2)),
            "produced 500 records in 2.0 s (250 records/s)"
        );
    }
}
