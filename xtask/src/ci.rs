//! `cargo xtask test`: every check CI runs, in order, stopping at the first
//! failure, ending with a two-minute fault run.

use std::process::Command;

use anyhow::Context;

use crate::{cmd, install};

/// The seed of the fault run CI makes; `cargo xtask chaos --seed` tries others.
const CHAOS_SEED: &str = "1";

pub(crate) async fn run() -> anyhow::Result<()> {
    let root = cmd::root();
    let tools = install::run().context("install")?;

    step("formatting", cmd::cargo().args(["fmt", "--all", "--", "--check"]))?;
    step(
        "clippy",
        cmd::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
    )?;
    // Documentation builds, with no broken link (a workspace lint).
    step(
        "docs",
        cmd::cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    let mut test = cmd::cargo();
    test.args(["test", "--workspace"]);
    for (var, path) in tools.env() {
        test.env(var, path);
    }
    step("tests", &mut test)?;

    step(
        "buf lint",
        Command::new(&tools.buf).arg("lint").current_dir(root.join("proto")),
    )?;
    // Against the main branch: changes that would break deployed clients.
    let has_main = cmd::succeeds(git().args(["rev-parse", "--verify", "--quiet", "refs/heads/main^{commit}"]));
    let main_has_proto = has_main && cmd::succeeds(git().args(["cat-file", "-e", "main:proto"]));
    if main_has_proto {
        step(
            "buf breaking",
            Command::new(&tools.buf)
                .args(["breaking", "proto", "--against", ".git#branch=main,subdir=proto"])
                .current_dir(&root),
        )?;
    } else {
        println!("==> buf breaking: skipped, no `main` branch with a proto/ directory to compare against");
    }

    // The Prometheus configuration and the alerts, each alert against its
    // unit tests.
    let prometheus = root.join("deploy").join("prometheus");
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "alerts.yml"],
        &["test", "rules", "alerts_test.yml"],
    ] {
        step(
            &format!("promtool {}", args.join(" ")),
            Command::new(&tools.promtool).args(args).current_dir(&prometheus),
        )?;
    }

    step_fn("storefront: generated code is current", crate::web::check_generated)?;
    step_fn("storefront: types", crate::web::typecheck)?;
    println!("==> storefront: browser tests");
    crate::web::browser_tests(&tools)
        .await
        .context("storefront: browser tests failed")?;

    // The rules together: two minutes of checkouts through faults, then
    // the books. A fixed seed, so a red run can be repeated as it was.
    step(
        "fault run",
        cmd::cargo().args(["xtask", "chaos", "--seconds", "120", "--seed", CHAOS_SEED]),
    )?;
    // Two of everything and a NATS cluster: node loss, kills and a rolling
    // restart, then the books; `--seconds 60` for the long run.
    step(
        "scale-out run",
        cmd::cargo().args(["xtask", "scale-out", "--seconds", "20"]),
    )?;

    println!("==> all checks passed");
    Ok(())
}

fn step(what: &str, command: &mut Command) -> anyhow::Result<()> {
    println!("==> {what}");
    cmd::run(command).with_context(|| format!("{what} failed"))
}

fn step_fn(what: &str, check: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    println!("==> {what}");
    check().with_context(|| format!("{what} failed"))
}

fn git() -> Command {
    let mut command = Command::new("git");
    command.current_dir(cmd::root());
    command
}
