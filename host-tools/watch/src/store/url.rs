//! A store's connection string: the parts of a URL the store reads (user information,
//! parameters, `%XX` escapes), and the string as shown, without its passwords.

/// Where the user information of a URL is: from after `scheme://` to its first `@` (as the
/// PostgreSQL driver reads it), if any.
fn userinfo_end(spec: &str) -> Option<(usize, usize)> {
    let start = spec.find("://")? + 3;
    let at = spec[start..].find('@')? + start;
    Some((start, at))
}

/// The password in a URL's user information, as written (as the driver reads it).
pub(super) fn userinfo_password(spec: &str) -> Option<&str> {
    let (start, at) = userinfo_end(spec)?;
    spec[start..at].split_once(':').map(|(_, p)| p)
}

/// The URL before its `?` (the first after the user information), and its parameters as
/// written (key, value), in order.
pub(super) fn split_params(spec: &str) -> (&str, Vec<(&str, &str)>) {
    let from = userinfo_end(spec).map_or(0, |(_, at)| at);
    match spec[from..].find('?') {
        Some(q) => {
            let (url, query) = (&spec[..from + q], &spec[from + q + 1..]);
            let params =
                query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
            (url, params)
        }
        None => (spec, vec![]),
    }
}

/// `%XX` escapes decoded (invalid ones kept as written).
pub(super) fn percent_decode(s: &str) -> String {
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
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `true` for a parameter name (as written) that names a password (`password`, `PASSWORD`,
/// `pass%77ord`, `sslpassword`…).
pub(super) fn is_password_key(key: &str) -> bool {
    percent_decode(key).to_ascii_lowercase().contains("password")
}

/// A connection string without its passwords: the user information's (`user:***@`, up to the
/// last `@`, so a password holding an `@` is hidden whole) and every parameter whose name holds
/// `password` (`password=***`).
pub fn redact(spec: &str) -> String {
    let Some(start) = spec.find("://").map(|s| s + 3) else {
        return redact_params(spec);
    };
    let (head, rest) = spec.split_at(start);
    match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{head}{}:***@{}", &rest[..colon], redact_params(&rest[at + 1..])),
            None => format!("{head}{}@{}", &rest[..at], redact_params(&rest[at + 1..])),
        },
        None => format!("{head}{}", redact_params(rest)),
    }
}

/// `text` with the value of every `…password…=VALUE` parameter after its first `?` as `***`.
fn redact_params(text: &str) -> String {
    let Some((url, query)) = text.split_once('?') else { return text.to_string() };
    let shown: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if is_password_key(k) => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{url}?{}", shown.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_the_user_information_and_as_parameters() {
        let cases = [
            ("postgres://lep:secret@127.0.0.1:5432/db", "postgres://lep:***@127.0.0.1:5432/db"),
            ("postgres://lep@db/x?password=secret&sslmode=require", "postgres://lep@db/x?password=***&sslmode=require"),
            ("postgres://db/x?sslmode=require&PassWord=secret", "postgres://db/x?sslmode=require&PassWord=***"),
            ("postgres://db/x?pass%77ord=secret", "postgres://db/x?pass%77ord=***"),
            ("postgres://lep:se@cr/et@db/x?password=secret", "postgres://lep:***@db/x?password=***"),
            ("postgres://lep@db/x", "postgres://lep@db/x"),
        ];
        for (spec, shown) in cases {
            assert_eq!(redact(spec), shown);
        }
        let (url, params) = split_params("postgres://u:p?w@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem");
        assert_eq!(url, "postgres://u:p?w@h/db");
        assert_eq!(params, [("sslmode", "verify-full"), ("sslrootcert", "%2Ftmp%2Fca.pem")]);
        assert_eq!(percent_decode("%2Ftmp%2Fca.pem%zz"), "/tmp/ca.pem%zz");
        assert_eq!(userinfo_password("postgres://u:p%40ss@h/db"), Some("p%40ss"));
    }
}
