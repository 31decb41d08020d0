//! `cargo xtask dlq list|show|redrive`: the dead-letter stream for
//! operators (see `shop_runtime::dlq`), against `NATS_URL` or the NATS of
//! `cargo xtask up`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use shop_runtime::dlq::{self, Filter, Parked};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    List,
    Show,
    Redrive,
}

pub(crate) struct Options {
    pub action: Action,
    pub filter: Filter,
}

/// Parses `list|show|redrive [--consumer C] [--subject S] [--seq N]`.
pub(crate) fn parse(args: &[&str]) -> Result<Options, String> {
    let (action, mut rest) = match args.split_first() {
        Some((&"list", rest)) => (Action::List, rest.iter()),
        Some((&"show", rest)) => (Action::Show, rest.iter()),
        Some((&"redrive", rest)) => (Action::Redrive, rest.iter()),
        _ => return Err("`dlq` needs list, show or redrive".into()),
    };
    let mut filter = Filter::default();
    while let Some(flag) = rest.next() {
        let mut value = || {
            rest.next()
                .map(|v| (*v).to_owned())
                .ok_or(format!("`{flag}` needs a value"))
        };
        match *flag {
            "--consumer" => filter.consumer = Some(value()?),
            "--subject" => filter.subject = Some(value()?),
            "--seq" => {
                let raw = value()?;
                filter.sequence = Some(
                    raw.parse()
                        .map_err(|_| format!("`--seq {raw}` is not a DLQ sequence"))?,
                );
            }
            other => return Err(format!("`dlq` has no option `{other}`")),
        }
    }
    if action == Action::Show && filter.sequence.is_none() {
        return Err("`dlq show` needs --seq N (from `dlq list`)".into());
    }
    Ok(Options { action, filter })
}

pub(crate) async fn run(options: &Options) -> anyhow::Result<()> {
    let url = crate::layout::servers_from_env()?.nats;
    let client = async_nats::ConnectOptions::new()
        .name("xtask-dlq")
        .connection_timeout(Duration::from_secs(3))
        .connect(&url)
        .await
        .with_context(|| format!("connecting to NATS at {url} (set NATS_URL, or start `cargo xtask up`)"))?;
    let js = async_nats::jetstream::new(client);
    match options.action {
        Action::List => {
            let parked = dlq::list(&js, &options.filter).await?;
            if parked.is_empty() {
                println!("nothing parked{}", describe(&options.filter));
                return Ok(());
            }
            println!(
                "{:>6}  {:>8}  {:<18}  {:<50}  error",
                "seq", "age", "consumer", "subject"
            );
            for p in &parked {
                println!(
                    "{:>6}  {:>8}  {:<18}  {:<50}  {}",
                    p.sequence,
                    age(p.parked_at),
                    p.consumer,
                    p.subject,
                    p.error
                );
            }
            println!("{} parked{}", parked.len(), describe(&options.filter));
        }
        Action::Show => {
            let Some(p) = dlq::list(&js, &options.filter).await?.into_iter().next() else {
                bail!("no DLQ entry {}", options.filter.sequence.unwrap_or_default());
            };
            show(&p);
        }
        Action::Redrive => {
            let done = dlq::redrive(&js, &options.filter).await?;
            for r in &done {
                let how = if r.published {
                    "re-driven"
                } else {
                    "already re-driven before"
                };
                println!("{:>6}  {}  {how}", r.sequence, r.subject);
            }
            println!("{} re-driven{}", done.len(), describe(&options.filter));
        }
    }
    Ok(())
}

fn show(p: &Parked) {
    println!("DLQ sequence  {}", p.sequence);
    println!(
        "parked        {} ago by {} after {} deliveries",
        age(p.parked_at),
        p.consumer,
        p.delivered
    );
    println!("error         {}", p.error);
    println!(
        "from          {} (stream {}, sequence {})",
        p.subject, p.stream, p.stream_sequence
    );
    println!("event         {} {}", p.event_type, p.event_id);
    println!("headers:");
    for (name, values) in p.headers.iter() {
        for value in values {
            println!("  {name}: {}", value.as_str());
        }
    }
    println!("payload:");
    println!("{}", String::from_utf8_lossy(&p.payload));
}

fn describe(filter: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &filter.consumer {
        parts.push(format!("consumer {c}"));
    }
    if let Some(s) = &filter.subject {
        parts.push(format!("subject {s}"));
    }
    if let Some(n) = filter.sequence {
        parts.push(format!("sequence {n}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn age(parked_at: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let seconds = now.saturating_sub(u64::try_from(parked_at).unwrap_or(0));
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_say_what_is_wrong() {
        let options = parse(&["redrive", "--consumer", "inventory-orders", "--subject", "orders.>"]).expect("valid");
        assert_eq!(options.action, Action::Redrive);
        assert_eq!(options.filter.consumer.as_deref(), Some("inventory-orders"));
        assert_eq!(options.filter.subject.as_deref(), Some("orders.>"));
        assert_eq!(parse(&["show", "--seq", "7"]).expect("valid").filter.sequence, Some(7));
        assert!(parse(&["show"]).is_err_and(|e| e.contains("--seq")));
        assert!(parse(&["list", "--seq", "x"]).is_err_and(|e| e.contains("not a DLQ sequence")));
        assert!(parse(&["purge"]).is_err());
    }
}
