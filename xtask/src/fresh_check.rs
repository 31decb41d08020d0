//! `cargo xtask fresh-check`: the two commands, as a new user meets them,
//! on a clean Debian root.
//!
//! A minimal Debian root (debootstrap `minbase`, plus what any Rust user
//! already has: CA certificates and the C toolchain rustc links with, and
//! sudo) is built once and cached. Each run copies it, clones the current
//! commit into `/root/shop` (a directory the `postgres` user cannot enter, as
//! on many servers) or, with `--user`, into the home of a user with sudo
//! rights, mounts the host's Rust toolchain read-only, and runs inside, as
//! that user:
//!
//! 1. `cargo xtask install`, with the network;
//! 2. `cargo fetch`, so that the next step needs no network;
//! 3. `cargo xtask up --check` in a network namespace of its own (loopback
//!    only), so it never collides with a stack already running here: it
//!    builds, starts everything, places one checkout through the gateway and
//!    waits for it to be CONFIRMED, then stops.
//!
//! Every step runs in its own mount and PID namespaces, so nothing it starts
//! (apt's postinst scripts start servers too) outlives it, and nothing is
//! mounted on the host. From the host the root gets only the toolchain and
//! what reaching the registries takes: name resolution and, on networks that
//! inspect TLS, the locally added CA certificates and the variables naming
//! CA bundles. Needs root; takes minutes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shop_infra::binaries;

use crate::{cmd, install};

/// Overrides the Debian mirror (default: the first one this machine's apt uses).
const MIRROR_VAR: &str = "FRESH_CHECK_MIRROR";
/// What a Rust user has before the two commands, beside the toolchain.
const BASE_PACKAGES: &str = "ca-certificates,gcc,libc6-dev,sudo";
/// The user of `--user`, who may run anything through sudo.
const USER: &str = "dev";

#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// The Debian release (`bookworm`, `trixie`).
    pub suite: String,
    /// Keep the root after the run, to look around in it.
    pub keep: bool,
    /// Run as a user with sudo rights instead of root.
    pub user: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            suite: "bookworm".into(),
            keep: false,
            user: false,
        }
    }
}

/// The variables naming CA bundles, passed on when set: with the host's
/// local CAs (below) they let the root reach registries through a network
/// that inspects TLS, as the host does.
const CA_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];
/// Where Debian keeps locally added CA certificates.
const LOCAL_CAS: &str = "/usr/local/share/ca-certificates";

/// Runs inside new mount and PID namespaces: mounts what a root needs, the
/// toolchain read-only, then runs the step chrooted with a clean
/// environment. Arguments: root, toolchain, user ("" for root), home,
/// working directory, step (a shell command line), then extra `NAME=value`
/// settings for the step's environment.
const STEP: &str = r#"
set -eu
root=$1 toolchain=$2 user=$3 home=$4 dir=$5 step=$6
shift 6
mount --make-rprivate /
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mkdir -p "$root/opt/rust"
mount --bind "$toolchain" "$root/opt/rust"
mount -o remount,bind,ro "$root/opt/rust"
if [ -n "$user" ]; then as="--userspec=$user:$user"; else as=""; fi
exec chroot $as "$root" /usr/bin/env -i \
  HOME="$home" USER="${user:-root}" LANG=C.UTF-8 TERM=dumb \
  PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  RUSTC=/opt/rust/bin/rustc "$@" \
  /bin/sh -c "cd $dir && $step"
"#;

/// Who runs the steps, and where.
struct Account {
    /// None for root.
    user: Option<&'static str>,
    home: String,
}

impl Account {
    fn checkout(&self) -> String {
        format!("{}/shop", self.home)
    }
}

/// Runs the steps in one root.
struct Runner {
    root: PathBuf,
    toolchain: PathBuf,
    account: Account,
}

impl Runner {
    /// Runs `line` in the checkout as the account (see [`STEP`]); how long
    /// it took.
    fn step(&self, line: &str, network: Network) -> anyhow::Result<Duration> {
        self.run(self.account.user, &self.account.checkout(), line, network)
    }

    /// Runs `line` as root, in `/`.
    fn as_root(&self, line: &str) -> anyhow::Result<Duration> {
        self.run(None, "/", line, Network::Host)
    }

    fn run(&self, user: Option<&str>, dir: &str, line: &str, network: Network) -> anyhow::Result<Duration> {
        let who = user.unwrap_or("root");
        println!("==> fresh-check ({who}): {line}");
        let home = match user {
            Some(_) => self.account.home.as_str(),
            None => "/root",
        };
        let mut command = Command::new("unshare");
        command.args(["--mount", "--pid", "--fork", "--kill-child"]);
        match network {
            Network::Host => {
                command.args(["sh", "-c", STEP, "fresh-check"]);
            }
            Network::Own => {
                let script = format!("ip link set lo up\n{STEP}");
                command.args(["--net", "sh", "-c", &script, "fresh-check"]);
            }
        }
        command
            .arg(&self.root)
            .arg(&self.toolchain)
            .arg(user.unwrap_or(""))
            .args([home, dir, line]);
        for var in CA_VARS {
            if let Some(value) = std::env::var_os(var) {
                let mut setting = std::ffi::OsString::from(format!("{var}="));
                setting.push(value);
                command.arg(setting);
            }
        }
        let started = Instant::now();
        let status = command.status().context("running unshare")?;
        if !status.success() {
            bail!(
                "`{line}` failed in the clean root ({status}); the root is left at {} to look into",
                self.root.display()
            );
        }
        Ok(started.elapsed())
    }
}

pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    if !shop_infra::infra::running_as_root() {
        bail!("fresh-check needs root: it runs debootstrap, chroot and network namespaces");
    }
    let repo = cmd::root();
    let commit = git_output(&repo, &["rev-parse", "HEAD"])?;
    if !git_output(&repo, &["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
        println!("note: uncommitted changes are not checked; fresh-check clones commit {commit}");
    }
    let mut missing = Vec::new();
    for (program, package) in [
        ("debootstrap", "debootstrap"),
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
    ] {
        if binaries::find(program).is_none() && !Path::new("/usr/sbin").join(program).is_file() {
            missing.push(package);
        }
    }
    if !missing.is_empty() {
        install::apt_install(&missing)?;
    }
    let toolchain = PathBuf::from(
        String::from_utf8(
            Command::new("rustc")
                .args(["--print", "sysroot"])
                .output()
                .context("running rustc --print sysroot")?
                .stdout,
        )?
        .trim(),
    );

    let cache = cache_dir()?;
    let base = cache.join(format!("{}-minbase", options.suite));
    let built = Instant::now();
    let cached = ensure_base(&base, &options.suite)?;
    let base_time = built.elapsed();

    let root = cache.join(format!("run-{}", options.suite));
    remove_root(&root)?;
    cmd::run(Command::new("cp").args(["-a", "--reflink=auto"]).arg(&base).arg(&root))?;
    let account = if options.user {
        Account {
            user: Some(USER),
            home: format!("/home/{USER}"),
        }
    } else {
        Account {
            user: None,
            home: "/root".into(),
        }
    };
    let checkout = root.join(account.checkout().trim_start_matches('/'));
    cmd::run(
        Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks", "--no-checkout"])
            .arg(&repo)
            .arg(&checkout),
    )?;
    cmd::run(
        Command::new("git")
            .arg("-C")
            .arg(&checkout)
            .args(["checkout", "--quiet", &commit]),
    )?;
    // Name resolution for the install step: the one thing the network needs
    // from the host.
    fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf")).context("copying /etc/resolv.conf")?;
    // As an installed system has it (sudo looks its own host name up).
    let hostname = fs::read_to_string(root.join("etc/hostname")).unwrap_or_default();
    let hostname = hostname.trim();
    let hosts = format!("127.0.0.1 localhost\n127.0.1.1 {hostname}\n::1 localhost ip6-localhost ip6-loopback\n");
    fs::write(root.join("etc/hosts"), hosts).context("writing /etc/hosts")?;
    let runner = Runner {
        root: root.clone(),
        toolchain,
        account,
    };
    let local_cas = copy_local_cas(&root)?;
    if local_cas > 0 {
        println!("trusting this machine's {local_cas} local CA certificate(s) in the root");
        runner.as_root("update-ca-certificates >/dev/null")?;
    }
    if let Some(user) = runner.account.user {
        let home = &runner.account.home;
        runner.as_root(&format!(
            "useradd --no-create-home --home-dir {home} --shell /bin/sh {user} \
             && echo '{user} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{user} \
             && chown -R {user}:{user} {home}"
        ))?;
    }

    let install = runner.step("cargo xtask install", Network::Host)?;
    let fetch = runner.step("cargo fetch --quiet", Network::Host)?;
    let up = runner.step("CARGO_NET_OFFLINE=true cargo xtask up --check", Network::Own)?;

    println!();
    let who = match runner.account.user {
        Some(user) => format!("as {user}, a user with sudo rights"),
        None => "as root".to_owned(),
    };
    println!(
        "fresh-check passed: Debian {} (debootstrap minbase + {BASE_PACKAGES}), {who}, commit {}",
        options.suite,
        &commit[..12.min(commit.len())]
    );
    let how = if cached { "cached" } else { "built" };
    println!("  clean root                 {:>7}  ({how})", minutes(base_time));
    println!("  cargo xtask install        {:>7}", minutes(install));
    println!("  cargo fetch                {:>7}", minutes(fetch));
    println!(
        "  cargo xtask up --check     {:>7}  to the first CONFIRMED order, build included, own network namespace",
        minutes(up)
    );
    if options.keep {
        println!("the root is kept at {}", root.display());
    } else {
        remove_root(&root)?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Network {
    /// The host's, for downloads.
    Host,
    /// A namespace of its own with only loopback, up.
    Own,
}

/// Copies the host's locally added CA certificates into `root`; how many.
fn copy_local_cas(root: &Path) -> anyhow::Result<usize> {
    let Ok(entries) = fs::read_dir(LOCAL_CAS) else {
        return Ok(0);
    };
    let target = root.join(LOCAL_CAS.trim_start_matches('/'));
    fs::create_dir_all(&target)?;
    let mut copied = 0;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "crt") && path.is_file() {
            fs::copy(&path, target.join(entry.file_name()))?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// The cached clean root for `suite`; whether it was already there.
fn ensure_base(base: &Path, suite: &str) -> anyhow::Result<bool> {
    let done = base.join(".fresh-check-complete");
    let wanted = format!("{suite} with {BASE_PACKAGES}\n");
    if fs::read_to_string(&done).is_ok_and(|made| made == wanted) {
        println!("clean root: {} (cached)", base.display());
        return Ok(true);
    }
    let partial = base.with_extension("partial");
    remove_root(&partial)?;
    remove_root(base)?;
    let mirror = mirror()?;
    cmd::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={BASE_PACKAGES}"), suite])
            .arg(&partial)
            .arg(&mirror),
    )?;
    fs::write(
        partial.join(".fresh-check-complete"),
        format!("{suite} from {mirror}\n"),
    )?;
    fs::rename(&partial, base)?;
    Ok(false)
}

/// `FRESH_CHECK_MIRROR`, or the first Debian mirror this machine's apt uses.
fn mirror() -> anyhow::Result<String> {
    if let Some(mirror) = std::env::var(MIRROR_VAR).ok().filter(|m| !m.is_empty()) {
        return Ok(mirror);
    }
    let mut sources = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        more.sort();
        sources.extend(more);
    }
    for source in sources {
        let Ok(text) = fs::read_to_string(&source) else {
            continue;
        };
        if let Some(mirror) = first_mirror(&text, &source) {
            return Ok(mirror);
        }
    }
    bail!("no Debian mirror found in apt's sources: set {MIRROR_VAR}")
}

/// The first non-security URI of an apt source file, in either format.
fn first_mirror(text: &str, file: &Path) -> Option<String> {
    let deb822 = file.extension().is_some_and(|e| e == "sources");
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            if deb822 {
                line.strip_prefix("URIs:")?.split_whitespace().next()
            } else {
                let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
                (words.next()? == "deb").then(|| words.next())?
            }
        })
        .find(|uri| uri.starts_with("http") && !uri.contains("security"))
        .map(str::to_owned)
}

fn cache_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let dir = PathBuf::from(home).join(".cache/shop-fresh-check");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Deletes a root, refusing while anything is mounted inside it (the host's
/// /dev bound in, say): the mounts of a step die with its namespace, so one
/// here means something else mounted it.
fn remove_root(root: &Path) -> anyhow::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let real = root.canonicalize()?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    if let Some(mount) = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .find(|point| Path::new(point).starts_with(&real))
    {
        bail!("{mount} is mounted inside {}: unmount it first", real.display());
    }
    fs::remove_dir_all(&real).with_context(|| format!("removing {}", real.display()))
}

fn git_output(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

fn minutes(duration: Duration) -> String {
    let seconds = duration.as_secs();
    format!("{}m{:02}s", seconds / 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_is_read_from_either_source_format() {
        let deb822 = "Types: deb\n# URIs: http://old.example/debian\nURIs: http://mirror.example/debian\n\
                      Suites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(
            first_mirror(deb822, Path::new("debian.sources")).as_deref(),
            Some("http://mirror.example/debian")
        );
        let classic = "deb http://mirror.example/debian-security bookworm-security main\n\
                       deb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            first_mirror(classic, Path::new("sources.list")).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            first_mirror("deb-src http://x/debian bookworm main\n", Path::new("a.list")),
            None
        );
    }
}
