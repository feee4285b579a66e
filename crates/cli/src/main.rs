//! `kafkit`: the kafkit command-line tool.
//!
//! # Layout
//! - `consumer`: `kafkit verifiable-consumer`, Apache Kafka's VerifiableConsumer contract.
//! - `producer`: `kafkit verifiable-producer`, Apache Kafka's VerifiableProducer contract.
//! - `events`: the newline-delimited JSON events both print on stdout.
//! - `properties`: Java properties files (`--consumer.config`, `--producer.config`).
//!
//! Stdout carries only JSON events; logs (`RUST_LOG`, default `warn`) and errors go to stderr. An
//! error is one line on stderr and a non-zero exit: 2 for bad arguments, 1 for anything else.

mod consumer;
mod events;
mod producer;
mod properties;

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
            return ExitCode::from(2);
        }
    };
    // rskafka logs every failed connection attempt at warn; kafkit's own error says it once.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rskafka=error")),
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
        }
    });
    // Background work (a connection retrying a dead broker) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafkit: {}", e.replace('\n', " "));
            ExitCode::FAILURE
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
