//! Keeping the services of `cargo xtask up` running: one that exits is
//! started again, after a pause that doubles while it keeps failing, so the
//! rest of the platform (and the gateway's fast failure in front of the dead
//! one) goes on meanwhile.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use shop_infra::infra::{ServerProcess, StopSignal};

/// When a process that exited is started again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Restarts {
    /// The pause before the first restart.
    pub initial: Duration,
    /// The longest pause.
    pub max: Duration,
    /// A process that ran this long before exiting starts over at `initial`.
    pub healthy_after: Duration,
}

impl Default for Restarts {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// What [`Supervised::tend`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tended {
    Running,
    /// The process exited; it is started again after the pause.
    Exited {
        status: ExitStatus,
        restart_in: Duration,
    },
    Waiting,
    /// Started again, for the `attempt`th time in a row.
    Restarted {
        attempt: u32,
    },
}

/// A process that is started again whenever it exits.
pub(crate) struct Supervised {
    name: String,
    command: Command,
    policy: Restarts,
    /// Where its output goes (appended), or this process's own output.
    log: Option<PathBuf>,
    process: ServerProcess,
    started: Instant,
    /// Restarts since it last ran for `healthy_after`.
    failures: u32,
    restart_at: Option<Instant>,
}

impl Supervised {
    pub(crate) fn spawn(name: &str, command: Command, policy: Restarts, log: Option<PathBuf>) -> anyhow::Result<Self> {
        let process = ServerProcess::spawn(name, &command, StopSignal::Term, log.as_deref())?;
        Ok(Self {
            name: name.to_owned(),
            command,
            policy,
            log,
            process,
            started: Instant::now(),
            failures: 0,
            restart_at: None,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    /// Notices an exit and restarts when the pause is over.
    pub(crate) fn tend(&mut self) -> anyhow::Result<Tended> {
        if let Some(at) = self.restart_at {
            if Instant::now() < at {
                return Ok(Tended::Waiting);
            }
            self.process = ServerProcess::spawn(&self.name, &self.command, StopSignal::Term, self.log.as_deref())?;
            self.started = Instant::now();
            self.restart_at = None;
            return Ok(Tended::Restarted { attempt: self.failures });
        }
        let Some(status) = self.process.try_wait()? else {
            return Ok(Tended::Running);
        };
        if self.started.elapsed() >= self.policy.healthy_after {
            self.failures = 0;
        }
        let doublings = self.failures.min(16);
        let restart_in = self.policy.initial.saturating_mul(1 << doublings).min(self.policy.max);
        self.failures += 1;
        self.restart_at = Some(Instant::now() + restart_in);
        Ok(Tended::Exited { status, restart_in })
    }

    pub(crate) async fn stop(&mut self) {
        self.restart_at = None;
        self.process.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Restarts {
        Restarts {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            healthy_after: Duration::from_secs(60),
        }
    }

    async fn next_change(supervised: &mut Supervised) -> Tended {
        for _ in 0..400 {
            match supervised.tend().expect("tend") {
                Tended::Running | Tended::Waiting => tokio::time::sleep(Duration::from_millis(10)).await,
                change => return change,
            }
        }
        panic!("nothing happened to {}", supervised.name());
    }

    #[tokio::test]
    async fn a_process_that_exits_is_started_again_with_growing_pauses() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 3"]);
        let mut supervised = Supervised::spawn("crashing", command, quick(), None).expect("spawn");

        let mut pauses = Vec::new();
        for attempt in 1..=4 {
            match next_change(&mut supervised).await {
                Tended::Exited { status, restart_in } => {
                    assert_eq!(status.code(), Some(3));
                    pauses.push(restart_in);
                }
                other => panic!("expected an exit, got {other:?}"),
            }
            assert_eq!(next_change(&mut supervised).await, Tended::Restarted { attempt });
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(pauses, [ms(50), ms(100), ms(200), ms(200)]);
        supervised.stop().await;
    }

    #[tokio::test]
    async fn a_running_process_is_left_alone_and_stops_on_request() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let mut supervised = Supervised::spawn("steady", command, quick(), None).expect("spawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(supervised.tend().expect("tend"), Tended::Running);
        supervised.stop().await;
        assert!(supervised.process().try_wait().expect("wait").is_some(), "stopped");
    }
}
