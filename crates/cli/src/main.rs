//! `kafkit`: the kafkit command-line tool.
//!
//! # Layout
//! - `consumer`: `kafkit verifiable-consumer`, Apache Kafka's VerifiableConsumer contract.
//! - `producer`: `kafkit verifiable-producer`, Apache Kafka's VerifiableProducer contract.
//! - `share`: `kafkit verifiable-share-consumer` (Apache Kafka's VerifiableShareConsumer contract) and
//!   `kafkit share-consume`: share groups (KIP-932).
//! - `copier`: `kafkit transactional-message-copier`, Apache Kafka's TransactionalMessageCopier.
//! - `diag`: `kafkit diag`: reachability, brokers, controller, API versions, topic health, a verdict.
//! - `topics`: `kafkit topics list / describe / create / delete`.
//! - `produce` / `consume`: lines of stdin to a topic, records of topics to stdout.
//! - `group`: `kafkit group list` / `kafkit group describe`: members, assignments and lag.
//! - `common`, `progress`: connection arguments and tables; the progress line on stderr.
//! - `events`: the newline-delimited JSON events both print on stdout.
//! - `properties`: Java properties files (`--consumer.config`, `--producer.config`).
//!
//! Stdout carries only the command's output (JSON events, tables, `--json` documents); logs
//! (`RUST_LOG`, default `warn`) and errors go to stderr. An error is one line on stderr and a
//! non-zero exit: 2 for bad arguments, 3 for an unknown group or topic, 4 for an unreachable
//! cluster, 5 when `diag` finds a problem, 6 when a broker refuses the security handshake (wrong
//! credentials, an untrusted certificate, a `security.protocol` that does not fit the listener), 1
//! for anything else.

mod common;
mod consume;
mod consumer;
mod copier;
mod diag;
mod events;
mod group;
mod produce;
mod producer;
mod progress;
mod properties;
mod share;
mod topics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kafkit",
    version,
    about = "kafkit's command-line tools (pure Rust, no librdkafka)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume in a group and print consumer events as JSON lines (Kafka's VerifiableConsumer).
    VerifiableConsumer(consumer::ConsumerArgs),
    /// Produce increasing integers and print each acknowledgement as JSON (Kafka's VerifiableProducer).
    VerifiableProducer(producer::ProducerArgs),
    /// Consume in a share group and print share consumer events as JSON lines (Kafka's
    /// VerifiableShareConsumer).
    VerifiableShareConsumer(share::VerifiableShareConsumerArgs),
    /// Records of a share group to stdout, each accepted (or released / rejected) once printed.
    ShareConsume(share::ShareConsumeArgs),
    /// Copy a topic to another in transactions with the consumed offsets (Kafka's
    /// TransactionalMessageCopier).
    TransactionalMessageCopier(copier::CopierArgs),
    /// Check a cluster: reachability, brokers, controller, API versions, topic health; a verdict.
    Diag(diag::DiagArgs),
    /// Manage topics: `list`, `describe`, `create`, `delete`.
    Topics(topics::TopicsArgs),
    /// Send the lines of stdin to a topic, one record per line.
    Produce(produce::ProduceArgs),
    /// Print the records of topics on stdout, one per line.
    Consume(consume::ConsumeArgs),
    /// Consumer groups: `list`, `describe --group-id G`, `reset-offsets --group-id G ...`.
    Group(group::GroupArgs),
}

/// Exit code for bad arguments or settings.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code for a group (or other named thing) that does not exist.
const EXIT_NOT_FOUND: u8 = 3;
/// Exit code when no broker of the cluster can be reached.
const EXIT_UNREACHABLE: u8 = 4;
/// Exit code when `kafkit diag` finds a problem with the cluster.
const EXIT_UNHEALTHY: u8 = 5;
/// Exit code when a broker refuses the security handshake (credentials, TLS, `security.protocol`).
const EXIT_SECURITY: u8 = 6;
/// Exit code when `group reset-offsets` finds the group active (it has members).
const EXIT_GROUP_ACTIVE: u8 = 7;

/// A command's failure: the one line for stderr and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    /// A runtime failure (exit 1).
    pub(crate) fn runtime(message: String) -> Self {
        Failure { code: 1, message }
    }
}

/// A runtime failure described in words (exit 1).
impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::runtime(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::runtime(message.to_owned())
    }
}

impl From<kafkit::Error> for Failure {
    fn from(e: kafkit::Error) -> Self {
        use kafkit::{Error, WireError};
        // GROUP_ID_NOT_FOUND: the group has no members and no committed offsets.
        const GROUP_ID_NOT_FOUND: i16 = 69;
        // NON_EMPTY_GROUP: the group has members (reset-offsets refuses).
        const NON_EMPTY_GROUP: i16 = 68;
        let code = match &e {
            Error::Config(_) => EXIT_USAGE,
            Error::Group {
                code: GROUP_ID_NOT_FOUND,
                ..
            }
            | Error::UnknownTopic { .. } => EXIT_NOT_FOUND,
            Error::Group {
                code: NON_EMPTY_GROUP,
                ..
            } => EXIT_GROUP_ACTIVE,
            Error::Security { .. } => EXIT_SECURITY,
            Error::Connection { source, .. } if source.is_security() => EXIT_SECURITY,
            Error::Unreachable { .. }
            | Error::Connection {
                source: WireError::Connect { .. },
                ..
            } => EXIT_UNREACHABLE,
            _ => 1,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's message is several lines (tip, usage); the contract is one clear line.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("kafkit: {message} (see --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kafkit: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::VerifiableConsumer(args) => consumer::run(args).await,
            Command::VerifiableProducer(args) => producer::run(args).await,
            Command::VerifiableShareConsumer(args) => share::run_verifiable(args).await,
            Command::ShareConsume(args) => share::run_consume(args).await,
            Command::TransactionalMessageCopier(args) => copier::run(args).await,
            Command::Diag(args) => diag::run(args).await,
            Command::Topics(args) => topics::run(args).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Group(args) => group::run(args).await,
        }
    });
    // Background work (a connection retrying a dead broker) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            eprintln!("kafkit: {}", message.replace('\n', " "));
            ExitCode::from(code)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT (the harness stops clients with SIGTERM).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
