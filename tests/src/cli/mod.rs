//! `jct`, the command-line client: for people (`-o text`) and scripts (`-o json`,
//! the stable shape documented in the README, and the exit codes of [`exit`]).
//!
//! One module a job: [`args`] the command line, [`client`] the connection and
//! token, [`commands`] the request/response commands, [`watch`] following a
//! task, [`trace`] reading its trace folder, [`json`] and [`render`] the two
//! output forms, [`error`] and [`exit`] how it ends.

pub mod args;
mod client;
mod commands;
pub mod error;
pub mod exit;
pub mod json;
mod output;
pub mod render;
mod trace;
mod watch;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use args::{Cli, Command, Output};
use client::Connection;
use error::CliError;

/// Runs `jct` with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit 2, --help and --version 0
    let format = cli.global.output;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return finish(
                format,
                Err(CliError::Other(format!("cannot start: {error}"))),
            );
        }
    };
    let outcome = runtime.block_on(run(cli));
    // a watch's stream or `up`'s services may still hold tasks: do not wait for them
    runtime.shutdown_background();
    finish(format, outcome)
}

fn finish(format: Output, outcome: Result<u8, CliError>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(CliError::OutputClosed) => ExitCode::from(exit::SUCCESS),
        Err(error) => {
            let text = match format {
                Output::Json => format!("{}\n", error.to_json()),
                Output::Text => error.to_text(),
            };
            output::stderr(&text);
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    let out = output::Out::new(cli.global.output);
    match cli.command {
        Command::Up => crate::local::run()
            .await
            .map(|()| exit::SUCCESS)
            .map_err(|error| CliError::Other(format!("{error:#}"))),
        Command::Completions { shell } => {
            let mut buffer = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "jct", &mut buffer);
            out.raw(&String::from_utf8_lossy(&buffer))?;
            Ok(exit::SUCCESS)
        }
        command => {
            let connection = Connection::open(&cli.global).await?;
            match command {
                Command::Enqueue(args) => commands::enqueue(&connection, &out, args).await,
                Command::Get { id } => commands::get(&connection, &out, id).await,
                Command::List(args) => commands::list(&connection, &out, args).await,
                Command::Cancel { id } => commands::cancel(&connection, &out, id).await,
                Command::Status => commands::status(&connection, &out).await,
                Command::Watch { id } => watch::watch(&connection, &out, id).await,
                Command::Trace { id } => trace::trace(&connection, &out, id).await,
                Command::Up | Command::Completions { .. } => unreachable!("handled above"),
            }
        }
    }
}
