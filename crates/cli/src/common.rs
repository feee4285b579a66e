//! What every cluster subcommand shares: the connection arguments, table rendering and writing the
//! answer to stdout.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use kafkit::ClientConfig;

use crate::Failure;

/// The cluster to talk to.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// The Kafka cluster, `host:port[,host:port...]`.
    #[arg(
        long = "bootstrap-server",
        env = "KAFKA_BOOTSTRAP",
        value_name = "HOST:PORT,..."
    )]
    pub(crate) bootstrap_server: String,

    /// How long to keep trying to reach the cluster before giving up, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub(crate) connect_timeout_ms: u64,
}

impl ClusterArgs {
    /// The client settings for this cluster, with the CLI's client id.
    pub(crate) fn client(&self) -> Result<ClientConfig, Failure> {
        Ok(
            ClientConfig::new(self.bootstrap_server.split(',').map(str::trim))?
                .client_id("kafkit-cli")
                .connect_timeout(Duration::from_millis(self.connect_timeout_ms)),
        )
    }
}

/// Writes `text` to stdout. A closed stdout (`| head`) is the reader's choice, not a failure.
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Node ids as `1,2,3` (`-` for none).
pub(crate) fn ids(ids: &[i32]) -> String {
    if ids.is_empty() {
        return "-".to_owned();
    }
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_does_not_pad_the_last() {
        let t = table(
            &["A", "BB", "C"],
            vec![
                vec!["xxx".into(), "y".into(), "z".into()],
                vec!["-".into(), "yyyy".into(), "".into()],
            ],
        );
        assert_eq!(t, "A    BB    C\nxxx  y     z\n-    yyyy\n");
    }

    #[test]
    fn ids_join_with_commas_or_dash() {
        assert_eq!(ids(&[1, 2, 3]), "1,2,3");
        assert_eq!(ids(&[]), "-");
    }
}
