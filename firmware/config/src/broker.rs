//! A broker's address as the `[mqtt]` keys take it: a host name or IP address only. A URL or
//! credentials written where a host belongs are refused with the keys that say the same, and a
//! password written there is never repeated.

use anyhow::{bail, Result};

/// A broker written as a URL (`mqtt://user:password@host:1883`) or with credentials
/// (`user@host`) where a host name belongs: its parts, to suggest the keys that hold them. The
/// password is never kept, only whether there was one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BrokerUrl {
    /// `mqtt`, `mqtts`, ... (lowercase), if written.
    scheme: Option<String>,
    /// The user name, if written.
    username: Option<String>,
    /// A password was written (after the user name).
    password: bool,
    /// The host name or address (an IPv6 address without brackets).
    host: String,
    /// The port as written, if any.
    port: Option<String>,
}

impl BrokerUrl {
    /// `None` when `text` has neither a scheme nor a user part (a plain host, or `host:port`).
    pub(crate) fn parse(text: &str) -> Option<BrokerUrl> {
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None if text.contains('@') => (None, text),
            None => return None,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((name, _)) => (Some(name.to_string()), true),
                None => (Some(u.to_string()), false),
            },
            None => (None, false),
        };
        let (host, port) = match hostport.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((addr, tail)) => (addr.to_string(), tail.strip_prefix(':').map(str::to_string)),
            None => match hostport.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.to_string())),
                _ => (hostport.to_string(), None),
            },
        };
        let username = username.filter(|u| !u.is_empty());
        Some(BrokerUrl { scheme, username, password, host, port: port.filter(|p| !p.is_empty()) })
    }

    /// How an error names the value: as written when it holds no credentials, else not at all.
    pub(crate) fn shown(&self, text: &str) -> String {
        if self.username.is_some() || self.password || text.contains('@') {
            "(not shown: it holds credentials)".into()
        } else {
            format!("\"{text}\"")
        }
    }

    /// The keys that say the same: host (or a hosts entry), port, username, where the password
    /// goes, and tls_ca for a TLS scheme.
    pub(crate) fn suggestion(&self, entry: bool) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let port = self.port.as_deref().filter(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        let mut keys = vec![];
        match (entry, port) {
            (true, Some(p)) => keys.push(format!("\"{host}:{p}\" in hosts")),
            (true, None) => keys.push(format!("\"{host}\" in hosts")),
            (false, Some(p)) => keys.push(format!("host = \"{}\", port = {p}", self.host)),
            (false, None) => keys.push(format!("host = \"{}\"", self.host)),
        }
        if let Some(p) = self.port.as_deref().filter(|_| port.is_none()) {
            keys.push(format!("a port from 1 to 65535 (not `{p}`)"));
        }
        if let Some(u) = &self.username {
            keys.push(format!("username = \"{u}\""));
        }
        if self.password || self.username.is_some() {
            keys.push("the password in a file named by password_file = \"FILE\" (or in the LEPTON_MQTT_PASSWORD environment variable), never in the config".into());
        }
        if matches!(self.scheme.as_deref(), Some("mqtts" | "ssl" | "tls" | "wss" | "mqtt+ssl")) {
            keys.push("tls_ca = \"CA.pem\" for TLS (port 8883 unless given)".into());
        }
        keys.join(", ")
    }
}

/// A broker host is a name or an IP address, nothing more: no scheme, no port, no path.
pub(crate) fn check_host(host: &str) -> Result<()> {
    if host.is_empty() {
        bail!("empty; give the broker's host name or IP address");
    }
    if let Some(url) = BrokerUrl::parse(host) {
        bail!("a URL; write its parts as keys: {}", url.suggestion(false));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some((name, port)) = host.rsplit_once(':') {
        bail!("host and port in one; write host = \"{name}\" and port = {port}");
    }
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !host.split('.').all(label_ok) {
        bail!("not a host name (letters, digits, `-`, dots) or an IP address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Config;
    #[test]
    fn a_broker_host_is_a_name_or_address_only() {
        let d = dir();
        let host = |h: &str| Config::load(&write(&d, &GOOD.replace("\"127.0.0.1\"", &format!("\"{h}\""))));
        for ok in ["broker.lan", "mqtt-1", "10.0.0.2", "::1", "[fe80::1]", "localhost"] {
            host(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let e = host("mqtt://broker.lan:1884").unwrap_err().to_string();
        assert!(
            e.contains("mqtt.host") && e.contains("a URL") && e.contains("host = \"broker.lan\", port = 1884"),
            "{e}"
        );
        let e = host("mqtts://broker.lan").unwrap_err().to_string();
        assert!(e.contains("tls_ca"), "{e}");
        let e = host("127.0.0.1:18883").unwrap_err().to_string();
        assert!(e.contains("host = \"127.0.0.1\" and port = 18883"), "{e}");
        let e = host("my broker").unwrap_err().to_string();
        assert!(e.contains("not a host name"), "{e}");
    }

    #[test]
    fn credentials_in_a_broker_url_are_never_echoed_and_the_keys_are_suggested() {
        let d = dir();
        let with = |mqtt: &str| {
            let text = GOOD.replace("host = \"127.0.0.1\"\nport = 1883", mqtt);
            format!("{:#}", Config::load(&write(&d, &text)).unwrap_err())
        };
        let e = with("host = \"mqtt://cam:secret@broker.lan:1883\"");
        assert!(!e.contains("secret"), "{e}");
        for want in [
            "line 5",
            "host = \"broker.lan\", port = 1883",
            "username = \"cam\"",
            "password_file",
            "LEPTON_MQTT_PASSWORD",
        ] {
            assert!(e.contains(want), "`{want}` not in {e}");
        }
        assert!(!e.contains("host = \"cam\"") && !e.contains("port = secret"), "{e}");
        let e = with("host = \"mqtts://cam:s3cr3t@[fd00::5]:8884/\"");
        assert!(!e.contains("s3cr3t") && e.contains("host = \"fd00::5\", port = 8884") && e.contains("tls_ca"), "{e}");
        let e = with("host = \"cam:hunter2@broker.lan\"");
        assert!(!e.contains("hunter2") && e.contains("host = \"broker.lan\"") && e.contains("username"), "{e}");
        let e = with("hosts = [\"node1:1883\", \"mqtt://cam:topsecret@node2:1884\"]");
        assert!(!e.contains("topsecret") && e.contains("mqtt.hosts entry"), "{e}");
        assert!(e.contains("\"node2:1884\" in hosts") && e.contains("username = \"cam\""), "{e}");
    }
}
