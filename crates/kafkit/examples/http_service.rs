//! A small consumer service with the two endpoints an orchestrator asks for: `GET /health` (the
//! consumer's health report as JSON; 200 when ready, 503 when not) and `GET /metrics` (Prometheus
//! text). It consumes a topic key by key (`KeyOrdered`) and shuts down gracefully on Ctrl-C: stop
//! fetching, let in-flight records finish, commit, leave the group, within a deadline.
//!
//! The HTTP side is a deliberately minimal HTTP/1.1 responder over `tokio::net::TcpListener`: read
//! the request line, ignore the headers, answer with a `Content-Length`, close. A real service would
//! mount the same two handlers in its web framework.
//!
//! Run: `cargo run -p kafkit --example http_service` (uses `KAFKA_BOOTSTRAP` if set), then
//! `curl -i localhost:8080/health` and `curl localhost:8080/metrics`.
//! - `PORT=9000` serves on 127.0.0.1:9000 instead of 8080;
//! - `-- --exit-after 20` shuts down gracefully after 20 s, as Ctrl-C would (for CI).

#![allow(clippy::print_stdout)]

use std::time::Duration;

use kafkit::consumer::{ConsumerBuilder, DispatchMode, HealthHandle, OffsetReset};
use kafkit::group::GroupConfig;
use kafkit::metrics::{Metrics, MetricsConfig};
use kafkit::{ClientConfig, ProducerBuilder, ProducerRecord};
use kafkit_testkit::{TestKafka, create_topic, random_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Records produced at start, so that `/metrics` has counters and lag to show.
const DEMO_RECORDS: usize = 600;
/// How long the consumer may take to drain, commit and leave after Ctrl-C.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read; anything longer is answered with 431.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client that sends no complete request head within this is disconnected.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exit_after = exit_after_from_args()?;
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|e| format!("PORT={p:?}: {e}"))?,
        Err(_) => 8080,
    };
    // Bound first, so a port in use fails before anything is started.
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?;

    let kafka = TestKafka::from_env_or_start().await?;
    let bootstrap = kafka.bootstrap();
    let topic = random_name("orders");
    create_topic(&bootstrap, &topic, 6, 1).await?;
    let client = ClientConfig::new([&bootstrap])?;

    let producer = ProducerBuilder::new(client.clone()).build().await?;
    let sends = (0..DEMO_RECORDS).map(|i| {
        let producer = producer.clone();
        let record =
            ProducerRecord::new(&topic, format!("order #{i}")).key(format!("customer-{}", i % 40));
        async move { producer.send(record).await }
    });
    futures::future::try_join_all(sends).await?;
    producer.close().await?;
    println!("produced {DEMO_RECORDS} records to {topic}");

    let metrics = Metrics::new(MetricsConfig::default());
    // Publishes a new snapshot every publish interval (1 s) for as long as this handle lives.
    let _publisher = metrics.spawn_publisher();

    let group = random_name("order-service");
    let consumer = ConsumerBuilder::new(client, GroupConfig::new(&group, [&topic]))
        .dispatch(DispatchMode::KeyOrdered { max_in_flight: 8 })
        .auto_offset_reset(OffsetReset::Earliest)
        .commit_interval(Duration::from_secs(1))
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .metrics(metrics.clone())
        .build()
        .await?;
    let health = consumer.health_handle();
    let stop = consumer.shutdown_handle();
    let mut run = tokio::spawn(consumer.run(|_order| async move {
        // Pretend each order takes a little work, so the lag visibly drains over a few seconds.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, std::convert::Infallible>(())
    }));

    // Aborted when dropped at the end of `main`: the server never outlives the consumer.
    let server = AbortOnDrop(tokio::spawn(serve(listener, health, metrics.clone())));
    println!("consuming {topic} in group {group}");
    println!("  health:  http://{address}/health");
    println!("  metrics: http://{address}/metrics");
    match exit_after {
        Some(secs) => println!("shutting down after {secs} s (or on Ctrl-C)"),
        None => println!("Ctrl-C to stop"),
    }

    let exit_timer = async {
        match exit_after {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    let stopped_early = tokio::select! {
        signal = tokio::signal::ctrl_c() => {
            match signal {
                Ok(()) => println!("Ctrl-C: shutting down"),
                Err(e) => println!("cannot listen for Ctrl-C ({e}): shutting down"),
            }
            None
        }
        () = exit_timer => {
            println!("--exit-after elapsed: shutting down");
            None
        }
        // The consumer stopped on its own (a fatal error): report it below.
        finished = &mut run => Some(finished),
    };
    stop.shutdown();
    let report = match stopped_early {
        Some(finished) => finished,
        // The consumer enforces SHUTDOWN_TIMEOUT itself; the margin covers leaving the group.
        None => tokio::time::timeout(SHUTDOWN_TIMEOUT + Duration::from_secs(5), run)
            .await
            .map_err(|_| "the consumer did not stop within its shutdown deadline")?,
    }?;
    drop(server);
    let report = report?;
    let snapshot = metrics.publish();
    println!(
        "stopped: {} records processed, {} commits; timed out: {}; uncommitted: {:?}",
        snapshot.totals.processed, snapshot.totals.commits, report.timed_out, report.uncommitted
    );
    Ok(())
}

/// `--exit-after <secs>`, if given.
fn exit_after_from_args() -> Result<Option<u64>, String> {
    let mut args = std::env::args().skip(1);
    let mut exit_after = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exit-after" => {
                let secs = args
                    .next()
                    .ok_or("--exit-after needs a number of seconds")?;
                exit_after = Some(
                    secs.parse()
                        .map_err(|e| format!("--exit-after {secs:?}: {e}"))?,
                );
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: [--exit-after <secs>]"
                ));
            }
        }
    }
    Ok(exit_after)
}

/// Accepts connections until aborted; each is answered on its own task, owned by `connections`, so
/// aborting the server aborts them too.
async fn serve(listener: TcpListener, health: HealthHandle, metrics: Metrics) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let health = health.clone();
                    let metrics = metrics.clone();
                    connections.spawn(async move {
                        if let Err(e) = respond(stream, &health, &metrics).await {
                            println!("http: {e}");
                        }
                    });
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    println!("http: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Reads one request head and writes one response, then closes the connection.
async fn respond(
    mut stream: TcpStream,
    health: &HealthHandle,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => return Ok(()), // Nothing useful arrived in time; just close.
        Ok(head) => match head? {
            Some(head) => route(&head, health, metrics),
            None => Response::text(
                431,
                "Request Header Fields Too Large",
                "request head too large\n",
            ),
        },
    };
    stream.write_all(&response.into_bytes()).await?;
    stream.shutdown().await
}

/// The request head (up to the blank line), or None when it exceeds [`MAX_REQUEST_HEAD`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break; // The client closed early; answer what we have (maybe a 400).
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

/// Picks the response from the request line; headers are ignored.
fn route(head: &str, health: &HealthHandle, metrics: &Metrics) -> Response {
    let mut request_line = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = match (request_line.next(), request_line.next()) {
        (Some(method), Some(target)) => (method, target),
        _ => return Response::text(400, "Bad Request", "malformed request line\n"),
    };
    let path = target.split('?').next().unwrap_or(target);
    if method != "GET" {
        let mut response = Response::text(405, "Method Not Allowed", "only GET is served\n");
        response.extra_headers = "Allow: GET\r\n";
        return response;
    }
    match path {
        "/health" => {
            let report = health.report();
            let (status, reason) = if report.is_ready() {
                (200, "OK")
            } else {
                (503, "Service Unavailable")
            };
            Response {
                status,
                reason,
                content_type: "application/json",
                extra_headers: "",
                body: report.to_json() + "\n",
            }
        }
        "/metrics" => Response {
            status: 200,
            reason: "OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            extra_headers: "",
            body: metrics.snapshot().to_prometheus(),
        },
        _ => Response::text(404, "Not Found", "try /health or /metrics\n"),
    }
}

struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    /// Complete header lines, each ending in CRLF.
    extra_headers: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Self {
        Self {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            extra_headers: "",
            body: body.to_owned(),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len(),
            self.extra_headers,
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

/// Aborts the task when dropped, so a spawned task is owned by the value that holds this.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
