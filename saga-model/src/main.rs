//! `saga-model [--large] [--orders 1,1] [--rivals 1|none] [--stock N]
//! [--cards ok,declined,3ds,async] [--max-attempts N] [--refunds N] [--refund-failures N]
//! [--no-duplicates] [--crashes N] [--outages N] [--lost-answers N] [--webhooks|--no-webhooks]
//! [--mutation Name]`:
//! checks the saga model and reports states, time and every discovery
//! (exit 1 when a property is broken or an outcome is never reached). The
//! fault options set every card's scope; `--cards` keeps each card's scope
//! of the configuration (`Config::ci`, or `--large` given before it).

use std::{process::ExitCode, time::Instant};

use saga_model::{Card, Config, Mutation, Scope, Shop, trace};
use stateright::{Checker, Expectation, Model};

fn main() -> ExitCode {
    let config = match parse(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("saga-model: {e}");
            return ExitCode::from(2);
        }
    };
    println!("checking {config:?}");
    let began = Instant::now();
    let checker = Shop::new(config).checker().threads(2).spawn_bfs().join();
    println!(
        "{} states ({} unique), depth {}, in {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        began.elapsed().as_secs_f64()
    );
    let shop = checker.model();
    let mut ok = true;
    for property in shop.properties() {
        let found = checker.discovery(property.name);
        let verdict = match (&property.expectation, &found) {
            (Expectation::Always | Expectation::Eventually, None) => "holds",
            (Expectation::Sometimes, Some(_)) => "reached",
            (Expectation::Always | Expectation::Eventually, Some(_)) => "BROKEN",
            (Expectation::Sometimes, None) => "NEVER REACHED",
        };
        ok &= matches!(verdict, "holds" | "reached");
        println!("{verdict:>13}  {:?} {}", property.expectation, property.name);
        if let (Expectation::Always | Expectation::Eventually, Some(path)) = (&property.expectation, found) {
            println!("{}", trace::render(shop, path));
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut config = Config::ci();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |raw: String, name: &str| raw.parse::<u8>().map_err(|e| format!("{name} {raw:?}: {e}"));
        match arg.as_str() {
            "--large" => config = Config::large(),
            "--mutation" => {
                let name = value(&arg)?;
                config.mutation = Mutation::ALL
                    .into_iter()
                    .find(|m| format!("{m:?}") == name)
                    .ok_or_else(|| format!("--mutation {name:?}: one of {:?}", Mutation::ALL))?;
            }
            "--no-duplicates" => each(&mut config, |s| s.duplicates = false),
            "--webhooks" => each(&mut config, |s| s.webhooks = true),
            "--no-webhooks" => each(&mut config, |s| s.webhooks = false),
            "--crashes" => {
                let n = number(value(&arg)?, &arg)?;
                each(&mut config, |s| s.crashes = n);
            }
            "--outages" => {
                let n = number(value(&arg)?, &arg)?;
                each(&mut config, |s| s.outages = n);
            }
            "--lost-answers" => {
                let n = number(value(&arg)?, &arg)?;
                each(&mut config, |s| s.lost_answers = n);
            }
            "--max-attempts" => config.max_attempts = u32::from(number(value(&arg)?, &arg)?),
            "--stock" => config.stock = i64::from(number(value(&arg)?, &arg)?),
            "--refunds" => config.refunds = number(value(&arg)?, &arg)?,
            "--refund-failures" => config.refund_failures = number(value(&arg)?, &arg)?,
            "--cards" => {
                let cards = value(&arg)?
                    .split(',')
                    .map(|card| match card {
                        "ok" => Ok(Card::Ok),
                        "declined" => Ok(Card::Declined),
                        "3ds" => Ok(Card::ThreeDs),
                        "async" => Ok(Card::Async),
                        other => Err(format!("--cards {other:?}: one of ok, declined, 3ds, async")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let scope = |card| {
                    config
                        .cards
                        .iter()
                        .find(|(c, _)| *c == card)
                        .map_or(Scope::FAULTS, |&(_, scope)| scope)
                };
                config.cards = cards.into_iter().map(|card| (card, scope(card))).collect();
            }
            "--orders" => {
                config.orders = value(&arg)?
                    .split(',')
                    .map(|q| q.parse::<i32>().map_err(|e| format!("--orders {q:?}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--rivals" => {
                config.rivals = value(&arg)?
                    .split(',')
                    .filter(|q| !q.is_empty() && *q != "none")
                    .map(|q| q.parse::<i32>().map_err(|e| format!("--rivals {q:?}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(config)
}

/// Applies `change` to every card's scope.
fn each(config: &mut Config, change: impl Fn(&mut Scope)) {
    for (_, scope) in &mut config.cards {
        change(scope);
    }
}
