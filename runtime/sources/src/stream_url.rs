//! A network camera's address and credentials, kept apart: credentials written into a URL
//! (`rtsp://user:pass@cam/…`) are taken out of it, so the URL can be logged, shown and published
//! as it is while the password only ever reaches the camera.

use lepton_core::error::{LeptonError, Result};

/// A camera URL without credentials, and the credentials.
#[derive(Clone)]
pub struct StreamUrl {
    url: url::Url,
    username: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for StreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password, not even in debug output.
        write!(f, "StreamUrl({}, user {:?})", self.url, self.username)
    }
}

impl std::fmt::Display for StreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

impl StreamUrl {
    /// Parses `text` for one of `schemes`; a user name and password given here win over ones
    /// in the URL. Errors never repeat the URL's credentials.
    pub fn parse(text: &str, schemes: &[&str], username: Option<&str>, password: Option<&str>) -> Result<Self> {
        let mut url = url::Url::parse(text).map_err(|e| LeptonError::Source {
            name: redact(text),
            reason: format!("not a URL ({e}); write it as {}://host[:port]/path", schemes[0]),
        })?;
        if !schemes.contains(&url.scheme()) {
            return Err(LeptonError::Source {
                name: redact(text),
                reason: format!("scheme `{}`; this source takes {}", url.scheme(), schemes.join(", ")),
            });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(LeptonError::Source { name: redact(text), reason: "no host".into() });
        }
        let decode = |s: &str| percent_decode(s);
        let in_url_user = (!url.username().is_empty()).then(|| decode(url.username()));
        let in_url_password = url.password().map(decode);
        // Cannot fail for URLs with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(StreamUrl {
            url,
            username: username.map(str::to_string).or(in_url_user),
            password: password.map(str::to_string).or(in_url_password),
        })
    }

    /// The URL without credentials.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The user name, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, if any (for the camera only).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

/// `text` with what could be credentials (anything before the last `@`, after a `//`) replaced,
/// for errors about URLs that do not parse.
pub fn redact(text: &str) -> String {
    let Some(at) = text.rfind('@') else { return text.to_string() };
    match text.find("//").map(|i| i + 2) {
        Some(start) if start <= at => format!("{}***{}", &text[..start], &text[at..]),
        _ => format!("***{}", &text[at..]),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_never_show() {
        let u = StreamUrl::parse("rtsp://admin:s%40cret@cam.lan:8554/live", &["rtsp"], None, None).unwrap();
        assert_eq!(u.to_string(), "rtsp://cam.lan:8554/live");
        assert_eq!((u.username(), u.password()), (Some("admin"), Some("s@cret")));
        assert!(!format!("{u:?}").contains("cret"));
        let u = StreamUrl::parse("rtsp://a:b@cam/x", &["rtsp"], Some("root"), Some("pw")).unwrap();
        assert_eq!((u.username(), u.password()), (Some("root"), Some("pw")), "configured credentials win");
        let e = StreamUrl::parse("http://u:topsecret@cam/x", &["rtsp"], None, None).unwrap_err().to_string();
        assert!(e.contains("scheme `http`") && !e.contains("topsecret"), "{e}");
        for bad in ["rtsp://u:topsecret@", "rtsp//u:topsecret@cam", "u:topsecret@cam"] {
            let e = StreamUrl::parse(bad, &["rtsp"], None, None).unwrap_err().to_string();
            assert!(!e.contains("topsecret") && e.contains("***@"), "{e}");
        }
    }
}
