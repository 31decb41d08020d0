//! `saga-model [--large] [--orders 1,1] [--rivals 1|none] [--stock N] [--no-duplicates]
//! [--crashes N] [--outages N] [--lost-answers N] [--max-attempts N]`:
//! checks the saga model and reports states, time and every discovery
//! (exit 1 when a property is broken or an outcome is never reached).

use std::{process::ExitCode, time::Instant};

use saga_model::{Config, Shop, trace};
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
            "--no-duplicates" => config.duplicates = false,
            "--crashes" => config.crashes = number(value(&arg)?, &arg)?,
            "--outages" => config.outages = number(value(&arg)?, &arg)?,
            "--lost-answers" => config.lost_answers = number(value(&arg)?, &arg)?,
            "--max-attempts" => config.max_attempts = u32::from(number(value(&arg)?, &arg)?),
            "--stock" => config.stock = i64::from(number(value(&arg)?, &arg)?),
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
