//! `swarm`: a Docker-native clustering system (Classic Swarm, in Rust).
//!
//! The binary is a thin `main` over [`run`]; the library form exists so that
//! tests can start a whole manager in-process ([`manage::Manager`]).
#![forbid(unsafe_code)]

mod api;
pub mod cert_reload;
mod cli;
mod cluster;
mod duration;
mod join;
mod logging;
pub mod manage;
mod metrics;
mod observe;
#[cfg(test)]
mod proptest_json;
mod reconcile;
mod replication;
mod reschedule;
pub mod services;
mod state;

use std::process::ExitCode;

use cli::{Cli, Command};

/// The `swarm` command: parses the command line, runs the command, and
/// returns the process exit code.
pub fn run() -> ExitCode {
    let cli = match Cli::parse_go_style(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.version {
        println!("swarm version {} (swarm-rs)", cli::VERSION);
        return ExitCode::SUCCESS;
    }
    let level = if cli.debug { "debug" } else { cli.log_level.as_str() };
    let logger = logging::Logger::detect(cli.log_format);
    if let Err(e) = logger.install(level) {
        return fatal(&logger, &e.to_string());
    }
    let Some(command) = cli.command else {
        eprintln!("Usage: swarm [OPTIONS] COMMAND\n\nCommands:\n  manage  Manage a docker cluster\n  join    Join a docker cluster\n  list    List nodes in a cluster\n\nRun 'swarm COMMAND --help' for more information on a command.");
        return ExitCode::from(1);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fatal(&logger, &format!("cannot start the runtime: {e}")),
    };
    let result = match command {
        Command::Manage(args) => runtime.block_on(manage::run(*args)),
        Command::Join(args) => runtime.block_on(join::join(args)),
        Command::List(args) => runtime.block_on(join::list(args)),
        Command::Create => Err(cli::CREATE_IS_GONE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(&logger, &e),
    }
}

/// Logs a fatal error the way the original did and returns failure.
fn fatal(logger: &logging::Logger, message: &str) -> ExitCode {
    logger.fatal(message);
    ExitCode::from(1)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
