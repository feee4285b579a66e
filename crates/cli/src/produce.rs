//! `kafkit produce`: one record per line of stdin. Sends are pipelined (up to `--max-in-flight`
//! records and `--max-in-flight-bytes` unacknowledged) and every one is awaited before the command
//! exits, so a zero exit means every line was acknowledged by the broker (acks=all).

use crate::common::ClusterArgs;
use crate::progress::Progress;
use crate::{EXIT_USAGE, Failure};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kafkit::{ProducerBuilder, ProducerRecord};

/// `kafkit produce`.
#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Split each line at the first occurrence of this separator into key and value (a line without
    /// it is an error). Without it, lines are values with no key.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record, `name=value` (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Send every record to this partition instead of partitioning by key.
    #[arg(long)]
    partition: Option<i32>,
    /// Records awaiting acknowledgement at most.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,
    /// Bytes of lines awaiting acknowledgement at most: past the producer's 32 MiB buffer, lines
    /// read ahead only wait in memory (a chunk of lines larger than this goes alone).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    max_in_flight_bytes: u64,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
}

/// Runs `kafkit produce`.
pub(crate) async fn run(args: ProduceArgs) -> Result<(), Failure> {
    let headers = args
        .headers
        .iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.to_owned(), Bytes::copy_from_slice(v.as_bytes())))
                .ok_or_else(|| Failure {
                    code: EXIT_USAGE,
                    message: format!("--header `{h}` is not NAME=VALUE"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if args.key_separator.as_deref() == Some("") {
        return Err(Failure {
            code: EXIT_USAGE,
            message: "--key-separator must not be empty".into(),
        });
    }
    let producer = ProducerBuilder::new(args.cluster.client()?).build().await?;
    // An unknown topic is one clear error before anything is read from stdin.
    producer.partition_count(&args.topic).await?;

    let progress = Progress::start("produced", args.progress);
    let lines = Lines {
        topic: args.topic.clone(),
        key_separator: args.key_separator.clone(),
        headers,
        partition: args.partition,
    };
    let (tx, mut chunks) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let reader = std::thread::spawn(move || lines.read(std::io::stdin().lock(), &tx));
    // One future per chunk (`send_all`), not per record: a batch's records are acknowledged
    // together, so a chunk waits once per batch instead of being woken once per record.
    let max_in_flight = args.max_in_flight as usize;
    let max_in_flight_bytes = usize::try_from(args.max_in_flight_bytes).unwrap_or(usize::MAX);
    let mut in_flight = 0;
    let mut in_flight_bytes = 0;
    let mut chunks_out = FuturesUnordered::new();
    let mut failure = None;
    'read: while let Some(chunk) = chunks.recv().await {
        let Chunk { records, bytes } = match chunk {
            Ok(chunk) => chunk,
            Err(bad) => {
                failure = Some(bad);
                break;
            }
        };
        while (in_flight + records.len() > max_in_flight
            || in_flight_bytes + bytes > max_in_flight_bytes)
            && let Some(done) = chunks_out.next().await
        {
            let (records, bytes) = settle(done, &progress, &mut failure);
            in_flight -= records;
            in_flight_bytes -= bytes;
        }
        if failure.is_some() {
            break 'read;
        }
        in_flight += records.len();
        in_flight_bytes += bytes;
        // Called here, in line order: the records are appended now (or, when the buffer is full,
        // take their turns now), so lines keep their order.
        let records_in_chunk = records.len();
        let sends = producer.send_all(records);
        chunks_out.push(async move {
            let mut outcome = ChunkOutcome {
                records: records_in_chunk,
                bytes,
                acknowledged: 0,
                failure: None,
            };
            for done in sends.await {
                match done {
                    Ok(_) => outcome.acknowledged += 1,
                    Err(e) => {
                        outcome.failure.get_or_insert(e);
                    }
                }
            }
            outcome
        });
    }
    // The reader stops at its next chunk once the receiver is gone.
    drop(chunks);
    let _ = reader.join();
    while let Some(done) = chunks_out.next().await {
        settle(done, &progress, &mut failure);
    }
    let _ = producer.close().await;
    match failure {
        Some(failure) => Err(failure),
        None => {
            progress.finish();
            Ok(())
        }
    }
}

/// Lines handed over at once: one hand-off between threads per chunk, not per line.
const CHUNK: usize = 1024;

/// Bytes of input gathered into one block (its lines' records share it).
const READ: usize = 1 << 20;

/// Bytes asked of stdin per read.
const SCRATCH: usize = 64 * 1024;

/// Bytes of lines that end a chunk before [`CHUNK`] lines (large lines: the bytes in flight are
/// counted per chunk).
const CHUNK_BYTES: usize = 1 << 20;

/// Records of consecutive lines, and the lines' bytes.
#[derive(Debug, Default)]
struct Chunk {
    records: Vec<ProducerRecord>,
    bytes: usize,
}

/// Chunks read ahead of the sends.
const CHUNKS_AHEAD: usize = 8;

/// Turns lines of input into records.
struct Lines {
    topic: String,
    key_separator: Option<String>,
    headers: Vec<(String, Bytes)>,
    partition: Option<i32>,
}

impl Lines {
    /// Reads `input` to its end on this (blocking) thread and sends its records in chunks; a line
    /// without the key separator ends it with a usage error. Lines are bytes, UTF-8 or not; a
    /// trailing `\n` or `\r\n` is not part of the line. Reads gather into blocks of about
    /// [`READ`] bytes whose lines become records sharing the block: keys and values are slices of
    /// it, with no copy or allocation per line. When the input pauses (a read comes back short),
    /// the lines read so far go at once rather than waiting for a full block or chunk.
    fn read(
        &self,
        mut input: impl std::io::Read,
        out: &tokio::sync::mpsc::Sender<Result<Chunk, Failure>>,
    ) {
        let mut scratch = vec![0; SCRATCH];
        let mut block: Vec<u8> = Vec::with_capacity(READ);
        // Where the block's lines end: after its last line end (0: none yet).
        let mut lines_end = 0;
        let mut chunk = Chunk::default();
        let mut line_no = 0u64;
        loop {
            let n = match input.read(&mut scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = out.blocking_send(Ok(std::mem::take(&mut chunk)));
                    let _ = out.blocking_send(Err(Failure::runtime(format!("reading stdin: {e}"))));
                    return;
                }
            };
            let read_from = block.len();
            block.extend_from_slice(&scratch[..n]);
            if let Some(at) = block[read_from..].iter().rposition(|&b| b == b'\n') {
                lines_end = read_from + at + 1;
            }
            let eof = n == 0;
            let paused = n < SCRATCH;
            if !(eof || paused || block.len() >= READ) {
                continue;
            }
            // The block ends after its last line end (at the input's end: after its last byte);
            // the partial line after it starts the next block.
            let cut = if eof { block.len() } else { lines_end };
            if cut > 0 {
                lines_end = 0;
                let mut next = Vec::with_capacity(READ.max(2 * (block.len() - cut)));
                next.extend_from_slice(&block[cut..]);
                block.truncate(cut);
                let lines = Bytes::from(std::mem::replace(&mut block, next));
                // A final line end ends the last line; it does not start another.
                let body = lines.strip_suffix(b"\n").unwrap_or(&lines);
                for text in body.split(|&b| b == b'\n') {
                    let text = text.strip_suffix(b"\r").unwrap_or(text);
                    line_no += 1;
                    match self.record(lines.slice_ref(text)) {
                        Some(record) => {
                            chunk.records.push(record);
                            chunk.bytes += text.len();
                        }
                        None => {
                            let _ = out.blocking_send(Ok(std::mem::take(&mut chunk)));
                            let sep = self.key_separator.as_deref().unwrap_or_default();
                            let _ = out.blocking_send(Err(Failure {
                                code: EXIT_USAGE,
                                message: format!(
                                    "line {line_no} has no key separator `{sep}`; nothing after it was sent"
                                ),
                            }));
                            return;
                        }
                    }
                    if (chunk.records.len() == CHUNK || chunk.bytes >= CHUNK_BYTES)
                        && out.blocking_send(Ok(std::mem::take(&mut chunk))).is_err()
                    {
                        return;
                    }
                }
            }
            if (paused || eof)
                && !chunk.records.is_empty()
                && out.blocking_send(Ok(std::mem::take(&mut chunk))).is_err()
            {
                return;
            }
            if eof {
                return;
            }
        }
    }

    /// The record of one line; `None` when a key separator is set and the line lacks it.
    fn record(&self, line: Bytes) -> Option<ProducerRecord> {
        let mut record = match &self.key_separator {
            Some(sep) => {
                let sep = sep.as_bytes();
                let at = line.windows(sep.len()).position(|w| w == sep)?;
                ProducerRecord::new(&self.topic, line.slice(at + sep.len()..)).key(line.slice(..at))
            }
            None => ProducerRecord::new(&self.topic, line),
        };
        for (k, v) in &self.headers {
            record = record.header(k.clone(), v.clone());
        }
        if let Some(p) = self.partition {
            record = record.partition(p);
        }
        Some(record)
    }
}

/// The outcomes of a chunk's sends.
struct ChunkOutcome {
    records: usize,
    bytes: usize,
    acknowledged: u64,
    /// The first error, if any send failed.
    failure: Option<kafkit::Error>,
}

/// Counts a chunk's acknowledged sends and keeps the first failure; returns the chunk's records
/// and bytes.
fn settle(
    done: ChunkOutcome,
    progress: &Progress,
    failure: &mut Option<Failure>,
) -> (usize, usize) {
    progress.add_n(done.acknowledged);
    if let Some(e) = done.failure {
        failure.get_or_insert(e.into());
    }
    (done.records, done.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk `lines` makes of `input`, read to its end.
    fn read_all(lines: &Lines, input: &[u8]) -> Vec<Result<Chunk, Failure>> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        lines.read(input, &tx);
        drop(tx);
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn lines(key_separator: Option<&str>) -> Lines {
        Lines {
            topic: "t".into(),
            key_separator: key_separator.map(str::to_owned),
            headers: vec![("h".into(), Bytes::from_static(b"v"))],
            partition: None,
        }
    }

    #[test]
    fn lines_become_records_in_chunks_bytes_as_given() {
        let mut input = b"k1\tv1\r\nk2\t\xff\xfe not utf-8\nk3\tv\t3".to_vec();
        for i in 0..CHUNK {
            input.extend_from_slice(format!("\nk\t{i}").as_bytes());
        }
        let chunks = read_all(&lines(Some("\t")), &input);
        let records: Vec<ProducerRecord> = chunks
            .into_iter()
            .map(|c| c.map_err(|f| f.message).unwrap())
            .inspect(|c| assert!(c.records.len() <= CHUNK))
            .flat_map(|c| c.records)
            .collect();
        assert_eq!(records.len(), 3 + CHUNK);
        let kv = |r: &ProducerRecord| {
            (
                r.key_bytes().unwrap().to_vec(),
                r.value_bytes().unwrap().to_vec(),
            )
        };
        assert_eq!(
            kv(&records[0]),
            (b"k1".to_vec(), b"v1".to_vec()),
            "\\r\\n ends a line"
        );
        assert_eq!(
            kv(&records[1]),
            (b"k2".to_vec(), b"\xff\xfe not utf-8".to_vec())
        );
        assert_eq!(
            kv(&records[2]),
            (b"k3".to_vec(), b"v\t3".to_vec()),
            "split at the first"
        );
        assert_eq!(
            kv(records.last().unwrap()).1,
            (CHUNK - 1).to_string().into_bytes()
        );
        assert_eq!(records[0].headers().len(), 1);
        assert_eq!(records[0].topic(), "t");
    }

    #[test]
    fn large_lines_end_a_chunk_at_its_byte_bound_and_the_bytes_are_counted() {
        let line = vec![b'x'; 10 * 1024];
        let mut input = Vec::new();
        for _ in 0..300 {
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        let chunks: Vec<Chunk> = read_all(&lines(None), &input)
            .into_iter()
            .map(|c| c.map_err(|f| f.message).unwrap())
            .collect();
        // 1 MiB / 10 KiB: a chunk ends at its 103rd line.
        let sizes: Vec<(usize, usize)> =
            chunks.iter().map(|c| (c.records.len(), c.bytes)).collect();
        assert_eq!(
            sizes,
            vec![(103, 103 * 10240), (103, 103 * 10240), (94, 94 * 10240)]
        );
    }

    /// Gives out at most `step` bytes per read.
    struct Trickle<'a> {
        input: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input = &self.input[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_split_across_reads_and_lines_longer_than_a_read_arrive_whole() {
        let long = vec![b'L'; 3 * READ + 17];
        let mut input = b"a\t1\r\nbb\t22\n".to_vec();
        input.extend_from_slice(b"k\t");
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nlast\tline");
        let expected: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"bb".to_vec(), b"22".to_vec()),
            (b"k".to_vec(), long.clone()),
            (b"last".to_vec(), b"line".to_vec()),
        ];
        for step in [1, 5, READ / 3, usize::MAX] {
            let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
            lines(Some("\t")).read(
                Trickle {
                    input: &input,
                    step,
                },
                &tx,
            );
            drop(tx);
            let got: Vec<(Vec<u8>, Vec<u8>)> = std::iter::from_fn(|| rx.try_recv().ok())
                .flat_map(|c| c.map_err(|f| f.message).unwrap().records)
                .map(|r| {
                    (
                        r.key_bytes().unwrap().to_vec(),
                        r.value_bytes().unwrap().to_vec(),
                    )
                })
                .collect();
            assert!(got == expected, "reads of {step} bytes");
        }
    }

    #[test]
    fn a_line_without_the_separator_ends_the_input_after_the_lines_before_it() {
        let chunks = read_all(&lines(Some("::")), b"a::1\nb::2\nno separator\nc::3\n");
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].as_ref().map(|c| c.records.len()).ok(), Some(2));
        let Err(failure) = &chunks[1] else {
            panic!("the error after the good lines");
        };
        assert_eq!(failure.code, EXIT_USAGE);
        assert!(failure.message.contains("line 3"), "{}", failure.message);

        let unkeyed = read_all(&lines(None), b"no separator needed\n");
        let records = &unkeyed[0].as_ref().ok().unwrap().records;
        assert!(records[0].key_bytes().is_none());
        assert_eq!(records[0].value_bytes(), Some(&b"no separator needed"[..]));
    }
}
