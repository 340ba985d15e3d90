//! The Node peer of figure 7: better-auth on PostgreSQL behind plain `node:http`
//! (`bench/node/server.mjs`), with its cookie cache on or off, one child process each.
//!
//! The npm packages are pinned by `bench/node/package-lock.json` and installed with
//! `npm ci` into `bench/node/node_modules` (git-ignored) when that folder is missing or
//! older than the lock file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Result;
use crate::child::Child;

/// The folder of the Node peer.
const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node");
/// The longest `npm ci` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a Node child may take to migrate and bind.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The route without any check.
pub(crate) const BARE_PATH: &str = "/hello";
/// The route behind `auth.api.getSession`.
pub(crate) const PROTECTED_PATH: &str = "/protected";
/// better-auth's own routes.
pub(crate) const SIGN_UP_PATH: &str = "/api/auth/sign-up/email";
/// better-auth's sign-out: deletes the session's row.
pub(crate) const SIGN_OUT_PATH: &str = "/api/auth/sign-out";

fn node_dir() -> PathBuf {
    PathBuf::from(NODE_DIR)
}

/// Runs `npm ci` unless `node_modules` is at least as new as `package-lock.json`.
pub(crate) async fn install() -> Result<()> {
    let dir = node_dir();
    if is_current(&dir) {
        return Ok(());
    }
    eprintln!("peers: npm ci in {} ...", dir.display());
    let mut command = tokio::process::Command::new("npm");
    command
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .kill_on_drop(true);
    let status = tokio::time::timeout(INSTALL_TIMEOUT, command.status())
        .await
        .map_err(|_| format!("npm ci did not finish within {INSTALL_TIMEOUT:?}"))??;
    if !status.success() {
        return Err(format!("npm ci in {} failed: {status}", dir.display()).into());
    }
    Ok(())
}

/// Whether npm's record of what it installed is at least as new as the lock file.
fn is_current(dir: &Path) -> bool {
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|meta| meta.modified());
    match (
        modified(dir.join("node_modules/.package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Ok(installed), Ok(locked)) => installed >= locked,
        _ => false,
    }
}

/// The version of the installed npm package `name` (from its `package.json`).
pub(crate) fn installed_version(name: &str) -> Result<String> {
    let path = node_dir()
        .join("node_modules")
        .join(name)
        .join("package.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)?;
    Ok(manifest["version"]
        .as_str()
        .ok_or_else(|| format!("{}: no version", path.display()))?
        .to_owned())
}

/// `node --version`.
pub(crate) async fn node_version() -> Result<String> {
    let output = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await?;
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// Whether better-auth trusts its signed `session_data` cookie without reading the
/// database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieCache {
    /// Every `getSession` reads PostgreSQL.
    Off,
    /// `getSession` trusts the cookie for its max age.
    On,
}

/// A running Node peer.
#[derive(Debug)]
pub(crate) struct NodeService {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// How long its cookie cache is trusted (zero when off), as the child reports it.
    pub(crate) cookie_cache_max_age: Duration,
}

impl NodeService {
    /// Starts `server.mjs` on `database_url` (a `postgres://` URL); `migrate` creates
    /// better-auth's tables first, through its own migration API.
    pub(crate) async fn start(
        database_url: &str,
        cookie_cache: CookieCache,
        migrate: bool,
    ) -> Result<Self> {
        let script = node_dir().join("server.mjs");
        let mut args = vec![
            script.into_os_string(),
            "--database-url".into(),
            database_url.into(),
            "--cookie-cache".into(),
            match cookie_cache {
                CookieCache::Off => "off",
                CookieCache::On => "on",
            }
            .into(),
        ];
        if migrate {
            args.push("--migrate".into());
        }
        let mut child = Child::spawn_program("node", args)?;
        let max_age: u64 = child
            .line_after("cookie-cache-seconds", START_TIMEOUT)
            .await?
            .parse()?;
        let addr = child
            .line_after("listening", START_TIMEOUT)
            .await?
            .parse()?;
        Ok(Self {
            child,
            addr,
            cookie_cache_max_age: Duration::from_secs(max_age),
        })
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The origin better-auth checks on `POST`s that carry cookies.
    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_node_modules_is_not_current() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package-lock.json"), "{}").unwrap();
        assert!(!is_current(dir.path()));
        std::fs::create_dir(dir.path().join("node_modules")).unwrap();
        std::fs::write(dir.path().join("node_modules/.package-lock.json"), "{}").unwrap();
        assert!(is_current(dir.path()));
    }
}
