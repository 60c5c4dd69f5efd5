//! The checks of a config that need the daemon's own code, after `lepton-config` has parsed and
//! checked the file: a network source's URL is parsed by the video code (scheme, host, the
//! credentials taken out of it). `lepton run` and `lepton check` load configs through [`load`].

use crate::config::{lines, Config, Source};
use anyhow::{bail, Context, Result};
use lepton_runtime::source::stream_url::StreamUrl;
use std::path::Path;

/// Reads, parses and checks a config file: the file itself ([`Config::from_toml`]), then every
/// network source's URL. Errors name the file, the pipeline and the key's line.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let config = Config::from_toml(&text, path)?;
    network_sources(&config, &text, path)?;
    Ok(config)
}

/// Checks every network source's URL and credentials without connecting; the error lists every
/// pipeline whose source is wrong, one per line, never with a password.
fn network_sources(config: &Config, text: &str, path: &Path) -> Result<()> {
    let f = path.display();
    let errors: Vec<String> = config
        .pipelines
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p.source, Source::Rtsp { .. } | Source::Http { .. }))
        .filter_map(|(k, p)| {
            let e = stream_url(&p.source).err()?;
            let line = lines::at_line(lines::key_line(text, "pipeline.source", Some(k), "url"));
            Some(format!("{f}: {line}pipeline `{}`: source: {e:#}", p.name))
        })
        .collect();
    match errors.len() {
        0 => Ok(()),
        1 => bail!("{}", errors[0]),
        n => bail!("{n} pipelines have errors:\n  {}", errors.join("\n  ")),
    }
}

/// A network source's URL with its credentials: the URL's syntax and scheme, the password file
/// (read) or environment variable (set). Connects to nothing. Errors never show a password.
pub fn stream_url(source: &Source) -> Result<StreamUrl> {
    let n = source.network()?;
    let parsed = StreamUrl::parse(n.url, n.schemes, n.username, n.password.as_deref())?;
    if n.password.is_some() && parsed.username().is_none() {
        bail!("a password is given but no username (set username, or put it in the URL)");
    }
    Ok(parsed)
}
