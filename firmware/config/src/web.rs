//! `[web]`: the device page's address, event history database and retention, and access token.

use crate::duration::Days;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// `[web]`: the device page (live view, event history, stats, `/metrics`, `/healthz`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Address to serve on (default `127.0.0.1:8080`; empty: no page).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The SQLite event history (default `lepton.db`, relative to the config).
    #[serde(default = "default_database")]
    pub database: PathBuf,
    /// File holding the access token; without one the page is open to whoever reaches it.
    pub token_file: Option<PathBuf>,
    /// Events older than this many days are deleted (default 30).
    #[serde(default = "default_retain_days")]
    pub retain_days: Days<3_650>,
    /// The history is kept under this many MiB, oldest events deleted first (default 100).
    #[serde(default = "default_retain_mb")]
    pub retain_mb: u64,
    /// A login lasts this many days (default 1); a restart or the page's log out ends it sooner.
    #[serde(default = "default_session_days")]
    pub session_days: Days<365>,
    /// Mark the login cookie `Secure`, so a browser sends it over HTTPS only (default false; set
    /// it when the page is reached through a reverse proxy that terminates TLS).
    #[serde(default)]
    pub secure_cookie: bool,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            listen: default_listen(),
            database: default_database(),
            token_file: None,
            retain_days: default_retain_days(),
            retain_mb: default_retain_mb(),
            session_days: default_session_days(),
            secure_cookie: false,
        }
    }
}

fn default_session_days() -> Days<365> {
    Days(1.0)
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_database() -> PathBuf {
    "lepton.db".into()
}

fn default_retain_days() -> Days<3_650> {
    Days(30.0)
}

fn default_retain_mb() -> u64 {
    100
}

impl Web {
    /// The address to serve on, `None` when `listen` is empty.
    pub fn addr(&self) -> Result<Option<std::net::SocketAddr>> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "web.listen = \"{}\": give an address and port, like \"127.0.0.1:8080\" or \"0.0.0.0:8080\" (empty: no page)",
                self.listen
            )
        })
    }

    /// Reads the token file: the token, trimmed; an error naming the file when it is unreadable
    /// or empty (the token itself is never in a message).
    pub fn token(&self) -> Result<Option<String>> {
        let Some(f) = &self.token_file else { return Ok(None) };
        let t = std::fs::read_to_string(f).with_context(|| format!("web.token_file {}", f.display()))?;
        let t = t.trim();
        if t.len() < 16 {
            bail!(
                "web.token_file {}: the token must be at least 16 characters (e.g. `openssl rand -hex 24 > {}`)",
                f.display(),
                f.display()
            );
        }
        Ok(Some(t.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use crate::Config;
    #[test]
    fn web_section_defaults_paths_and_errors() {
        let d = dir();
        let c = Config::load(&write(&d, &format!("{GOOD}\n[web]\n"))).unwrap();
        let w = c.web.unwrap();
        assert_eq!(w.addr().unwrap(), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(w.database, d.join("lepton.db"), "relative to the config");
        assert!(Config::load(&write(&d, GOOD)).unwrap().web.is_none(), "no [web]: no page");
        let off = Config::load(&write(&d, &format!("{GOOD}\n[web]\nlisten = \"\"\n"))).unwrap();
        assert_eq!(off.web.unwrap().addr().unwrap(), None, "empty listen: no page");
        let err =
            |extra: &str| format!("{:#}", Config::load(&write(&d, &format!("{GOOD}\n[web]\n{extra}\n"))).unwrap_err());
        assert!(err("listen = \"localhost\"").contains("web.listen = \"localhost\""));
        assert!(err("token_file = \"nope\"").contains("web.token_file"));
        std::fs::write(d.join("short"), "abc\n").unwrap();
        let e = err("token_file = \"short\"");
        assert!(e.contains("at least 16 characters") && !e.contains("abc"), "{e}");
        assert!(err("retain_days = 0").contains("web.retain_days"));
        assert!(err("session_days = 0").contains("web.session_days"));
        assert!(err("session_days = inf").contains("session_days"));
        let w = Config::load(&write(&d, &format!("{GOOD}\n[web]\nsession_days = 0.5\nsecure_cookie = true\n")))
            .unwrap()
            .web
            .unwrap();
        assert_eq!((w.session_days.duration().as_secs(), w.secure_cookie), (43_200, true));
        assert_eq!((Web::default().session_days.duration().as_secs(), Web::default().secure_cookie), (86_400, false));
        assert!(err("colour = 1").contains("colour"));
    }
}
