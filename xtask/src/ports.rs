//! The ports a stack needs: moved together by one setting, and checked
//! before anything starts, naming whoever holds a taken one.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};

use anyhow::{Context, bail};

/// Added to every port the stack listens on, so that a second stack can run
/// beside the first (`SHOP_PORT_OFFSET=100 cargo xtask up`).
pub(crate) const OFFSET_VAR: &str = "SHOP_PORT_OFFSET";

/// A port the stack will listen on, and what for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Port {
    pub number: u16,
    pub purpose: String,
}

/// The port offset from the environment (0 when unset).
pub(crate) fn offset_from_env() -> anyhow::Result<u16> {
    match std::env::var(OFFSET_VAR) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .with_context(|| format!("{OFFSET_VAR}={value:?} is not a number from 0 to 65535")),
        _ => Ok(0),
    }
}

/// `base` moved by `offset`.
pub(crate) fn shifted(base: u16, offset: u16) -> anyhow::Result<u16> {
    match base.checked_add(offset) {
        Some(port) => Ok(port),
        None => bail!("{OFFSET_VAR}={offset} moves port {base} past 65535"),
    }
}

/// How far apart the ports of a service's replicas are (`up --replicas`):
/// replica k listens on its service's ports plus `REPLICA_STEP * (k - 1)`.
/// Steps of 100 keep clear of the other ports: from the gateway's 8080 and
/// the admin ports 9051-9080, from each other, and from 9090 and 9100,
/// where Debian's own Prometheus and node exporter listen.
pub(crate) const REPLICA_STEP: u16 = 100;

/// The most replicas of a service `up` starts, so their names keep one
/// digit (`svc-order-9`); the steps would allow ten (an eleventh gateway's
/// 8080 + 1000 is the first one's admin port).
pub(crate) const MAX_REPLICAS: usize = 9;

/// The port of replica `replica` (from 1) of a server whose first replica
/// listens on `base`, moved by `offset`.
pub(crate) fn of_replica(base: u16, replica: usize, offset: u16) -> anyhow::Result<u16> {
    let step = replica
        .checked_sub(1)
        .and_then(|k| u16::try_from(k).ok())
        .and_then(|k| k.checked_mul(REPLICA_STEP));
    match step.and_then(|step| base.checked_add(step)) {
        Some(port) => shifted(port, offset),
        None => bail!("replica {replica} of the server on port {base} has no port (past 65535, or not from 1)"),
    }
}

/// Fails unless every port in `needed` is free on 127.0.0.1, naming each
/// taken one, what it was for and, where this user may see it, the process
/// that holds it.
pub(crate) fn check_free(needed: &[Port]) -> anyhow::Result<()> {
    let taken: Vec<&Port> = needed
        .iter()
        .filter(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port.number)).is_err())
        .collect();
    if taken.is_empty() {
        return Ok(());
    }
    let mut message = String::from("ports the stack needs are in use; nothing was started:");
    for port in &taken {
        let _ = write!(
            message,
            "\n  {} ({}): {}",
            port.number,
            port.purpose,
            holders(port.number)
        );
    }
    let _ = write!(
        message,
        "\nStop what holds them, or run this stack beside it on other ports: \
         {OFFSET_VAR}=<n> moves every port by n (e.g. {OFFSET_VAR}=100; beside \
         `up --replicas N`, 100·N). \
         NATS_URL, DATABASE_URL and REDIS_URL use servers that are already running instead."
    );
    bail!(message)
}

/// Who listens on `port`, as a phrase.
fn holders(port: u16) -> String {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return "in use (no listening socket found; another network namespace or a socket being closed)".to_owned();
    }
    let owners = socket_owners(&inodes);
    if owners.is_empty() {
        return format!("held by a process this user cannot inspect (as root: `ss -ltnp 'sport = :{port}'`)");
    }
    let described: Vec<String> = owners
        .iter()
        .map(|owner| format!("held by {} (pid {}): {}", owner.name, owner.pid, owner.command_line))
        .collect();
    described.join("; ")
}

/// The processes listening on `port` (that this user may inspect).
pub(crate) fn listeners(port: u16) -> Vec<u32> {
    socket_owners(&listening_inodes(port))
        .iter()
        .map(|owner| owner.pid)
        .collect()
}

/// Inodes of the TCP sockets listening on `port`, any address, IPv4 or IPv6.
fn listening_inodes(port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if local_port == Some(port)
                && *state == LISTEN
                && let Ok(inode) = inode.parse()
            {
                inodes.push(inode);
            }
        }
    }
    inodes
}

struct Owner {
    pid: u32,
    name: String,
    command_line: String,
}

/// The processes holding any of these socket inodes (those whose file
/// descriptors this user may read).
fn socket_owners(inodes: &[u64]) -> Vec<Owner> {
    let targets: Vec<String> = inodes.iter().map(|inode| format!("socket:[{inode}]")).collect();
    let Ok(processes) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut owners = Vec::new();
    for process in processes.filter_map(Result::ok) {
        let Some(pid) = process.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds = fds.filter_map(Result::ok).any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|link| targets.iter().any(|t| link.as_os_str() == t.as_str()))
        });
        if !holds {
            continue;
        }
        let name = fs::read_to_string(process.path().join("comm"))
            .map(|comm| comm.trim_end().to_owned())
            .unwrap_or_else(|_| "?".to_owned());
        let command_line = fs::read(process.path().join("cmdline"))
            .map(|bytes| {
                let words: Vec<String> = bytes
                    .split(|b| *b == 0)
                    .filter(|word| !word.is_empty())
                    .map(|word| String::from_utf8_lossy(word).into_owned())
                    .collect();
                shortened(&words.join(" "), 120)
            })
            .unwrap_or_default();
        owners.push(Owner {
            pid,
            name,
            command_line,
        });
    }
    owners
}

fn shortened(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max_chars).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_named_with_its_purpose_and_holder() {
        let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let taken = holder.local_addr().expect("addr").port();
        let free = {
            let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            probe.local_addr().expect("addr").port()
        };
        let needed = [
            Port {
                number: free,
                purpose: "svc-order gRPC".into(),
            },
            Port {
                number: taken,
                purpose: "PostgreSQL".into(),
            },
        ];

        let message = format!("{:#}", check_free(&needed).expect_err("a port is taken"));

        assert!(
            message.contains(&format!("{taken} (PostgreSQL): held by ")),
            "{message}"
        );
        assert!(message.contains(&format!("(pid {})", std::process::id())), "{message}");
        let own_name = fs::read_to_string("/proc/self/comm").expect("comm");
        assert!(message.contains(own_name.trim_end()), "{message}");
        assert!(
            !message.contains("svc-order gRPC"),
            "only taken ports are listed: {message}"
        );
        assert!(message.contains(OFFSET_VAR), "says how to move the stack: {message}");

        drop(holder);
        check_free(&needed).expect("all free once the holder is gone");
    }

    #[test]
    fn the_offset_moves_ports_and_refuses_to_overflow() {
        assert_eq!(shifted(8080, 100).expect("fits"), 8180);
        let error = shifted(65000, 1000).expect_err("past the end");
        assert!(error.to_string().contains("past 65535"), "{error}");
    }

    #[test]
    fn replicas_step_by_a_hundred_before_the_offset_and_refuse_to_overflow() {
        assert_eq!(of_replica(50051, 1, 0).expect("fits"), 50051);
        assert_eq!(of_replica(50051, 2, 0).expect("fits"), 50151);
        assert_eq!(of_replica(8080, 3, 1000).expect("fits"), 9280);
        let error = of_replica(65000, 9, 0).expect_err("past the end");
        assert!(error.to_string().contains("past 65535"), "{error}");
        let error = of_replica(50055, MAX_REPLICAS, 15000).expect_err("the offset moves it past the end");
        assert!(error.to_string().contains(OFFSET_VAR), "{error}");
        of_replica(8080, 0, 0).expect_err("replicas count from 1");
    }
}
