//! The storefront (`web/`): its client code generated from `proto/` and
//! kept current, its types checked, its bundle built into `web/dist` (which
//! the gateway serves), and its browser tests run with Playwright driving
//! Debian's Chromium against a stack of their own.

use std::{process::Command, time::Duration};

use anyhow::{Context, bail};

use crate::{client, cmd, install::Tools, layout, stack, supervise::Tended};

fn npm(script: &str) -> Command {
    let mut command = Command::new("npm");
    command
        .args(["run", "--silent", script])
        .current_dir(layout::storefront_sources());
    command
}

/// Bundles the storefront into `web/dist` (failing over its size limit).
pub(crate) fn build() -> anyhow::Result<()> {
    cmd::run(&mut npm("build")).context("building the storefront")
}

/// Regenerates the client code from `proto/` and fails when it differs
/// from what is committed: a changed `.proto` needs `npm run generate`.
pub(crate) fn check_generated() -> anyhow::Result<()> {
    cmd::run(&mut npm("generate"))?;
    let status = Command::new("git")
        .args(["status", "--porcelain", "--", "web/src/gen"])
        .current_dir(cmd::root())
        .output()
        .context("running git status")?;
    let changed = String::from_utf8_lossy(&status.stdout);
    if !changed.trim().is_empty() {
        bail!("web/src/gen is stale: run `npm run generate` in web/ and commit the result\n{changed}");
    }
    Ok(())
}

/// `tsc --noEmit` over the sources and the tests.
pub(crate) fn typecheck() -> anyhow::Result<()> {
    cmd::run(&mut npm("check")).context("type-checking the storefront")
}

/// Builds the storefront and runs its browser tests against a stack of
/// their own on free ports (screenshots in `web/test-results/`).
pub(crate) async fn browser_tests(tools: &Tools) -> anyhow::Result<()> {
    build()?;
    stack::build_services(false)?;
    let bin_dir = stack::bin_dir(false)?;
    let data = cmd::root().join(".data").join("storefront");
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("removing the last run's {}", data.display()))?;
    }
    std::fs::create_dir_all(&data)?;
    let layout = layout::Layout::on_free_ports(1);
    let gateway = layout.gateway_port().context("the layout has a gateway")?;
    let mut running = stack::start_all(&layout, &bin_dir, &data, Some(&data)).await?;
    if !running.missing.is_empty() {
        bail!("no binary for {}", running.missing.join(", "));
    }
    client::gateway_channel(gateway).await?;
    // The upstreams' health settles before the first page asks for it.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Tests stop and kill services by process group (SHOP_CART_PROCESS_GROUP,
    // …); a killed one is started again, as `up` does.
    let mut playwright = tokio::process::Command::new("npx");
    playwright
        .args(["playwright", "test"])
        .current_dir(layout::storefront_sources())
        .env("SHOP_URL", format!("http://127.0.0.1:{gateway}"))
        .env("CHROMIUM", &tools.chromium);
    for (placed, supervised) in running.services.iter_mut() {
        if let Some(group) = supervised.process().process_group() {
            let var = format!("SHOP_{}_PROCESS_GROUP", placed.service.short.to_uppercase());
            playwright.env(var, group.to_string());
        }
    }
    println!("$ npx playwright test");
    let mut playwright = playwright.spawn().context("starting npx playwright test")?;
    let status = loop {
        tokio::select! {
            status = playwright.wait() => break status?,
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                for (_, service) in running.services.iter_mut() {
                    if let Tended::Exited { restart_in, .. } = service.tend()? {
                        println!("{} exited; starting it again in {restart_in:?}", service.name());
                    }
                }
            }
        }
    };
    let outcome = if status.success() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("npx playwright test: {status}"))
    };
    running.stop().await;
    match outcome {
        Ok(()) => {
            std::fs::remove_dir_all(&data).ok();
            Ok(())
        }
        Err(e) => Err(e.context(format!(
            "browser tests failed; screenshots and traces in web/test-results, service logs in {}",
            data.display()
        ))),
    }
}
