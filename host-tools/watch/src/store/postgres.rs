//! The PostgreSQL store: reading a `postgres://` URL and its TLS settings, connecting, giving a
//! store from before runs its `run` column and key, and inserting a row.

use super::row::Row;
use super::tls::{root_store, ChainOnly, NoCheck};
use super::url::{is_password_key, percent_decode, redact, split_params, userinfo_password};
use super::{chain, scrub, StoreError, INDEX, KEYS, SCHEMA};
use std::sync::Arc;

pub(super) fn open_postgres(target: PgTarget) -> Result<postgres::Client, StoreError> {
    let what = format!("--store {}", target.shown);
    let fail = |e: postgres::Error| StoreError::Postgres(what.clone(), scrub(&chain(&e), &target.secrets));
    let mut c = match target.tls {
        None => target.config.connect(postgres::NoTls),
        Some(tls) => target.config.connect(tls),
    }
    .map_err(fail)?;
    for (_, s) in SCHEMA {
        // Concurrent consumers may create the tables at once: one wins, the others see them.
        if let Err(e) = c.batch_execute(s) {
            let race = e.code().is_some_and(|c| {
                *c == postgres::error::SqlState::UNIQUE_VIOLATION || *c == postgres::error::SqlState::DUPLICATE_TABLE
            });
            if !race {
                return Err(fail(e));
            }
        }
    }
    postgres_add_runs(&mut c).map_err(fail)?;
    if let Err(e) = c.batch_execute(INDEX) {
        if !e.code().is_some_and(|c| *c == postgres::error::SqlState::UNIQUE_VIOLATION) {
            return Err(fail(e));
        }
    }
    Ok(c)
}

/// Tables from before runs get `run` (0 for their rows) and the key with it, each in a
/// transaction that locks the table, so consumers starting together do it once.
fn postgres_add_runs(c: &mut postgres::Client) -> Result<(), postgres::Error> {
    const KEY_HAS_RUN: &str = "SELECT count(*) FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = to_regclass($1) AND i.indisprimary AND a.attname = 'run'";
    for (table, key) in KEYS {
        if c.query_one(KEY_HAS_RUN, &[table])?.get::<_, i64>(0) > 0 {
            continue;
        }
        let mut t = c.transaction()?;
        t.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))?;
        if t.query_one(KEY_HAS_RUN, &[table])?.get::<_, i64>(0) == 0 {
            t.batch_execute(&format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS run BIGINT NOT NULL DEFAULT 0"))?;
            let constraint: Option<String> = t
                .query_opt(
                    "SELECT conname::text FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p'",
                    &[table],
                )?
                .map(|r| r.get(0));
            let drop = constraint.map_or(String::new(), |n| format!("DROP CONSTRAINT \"{n}\", "));
            t.batch_execute(&format!("ALTER TABLE {table} {drop}ADD PRIMARY KEY ({key})"))?;
        }
        t.commit()?;
    }
    Ok(())
}

/// How a `postgres://` store is reached: the driver's settings (the URL without the parameters
/// read here), the TLS connector (none: `sslmode=disable`), the URL as shown and its secrets.
pub(super) struct PgTarget {
    config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    pub(super) shown: String,
    pub(super) secrets: Vec<String>,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Not at all (`prefer`, `require`): encryption against eavesdropping only.
    Nothing,
    /// Signed by the CA (`verify-ca`, or `require` with `sslrootcert`, as libpq does).
    Chain,
    /// Signed by the CA and issued for the host connected to (`verify-full`).
    ChainAndName,
}

impl PgTarget {
    pub(super) fn parse(spec: &str) -> Result<PgTarget, StoreError> {
        let shown = redact(spec);
        let what = format!("--store {shown}");
        let (url, params) = split_params(spec);
        let mut secrets = vec![];
        if let Some(p) = userinfo_password(spec) {
            secrets.push(p.to_string());
            secrets.push(percent_decode(p));
        }
        let (mut mode, mut rootcert, mut kept) = (None, None, vec![]);
        for (key, value) in params {
            match percent_decode(key).as_str() {
                "sslmode" => mode = Some(percent_decode(value)),
                "sslrootcert" => rootcert = Some(percent_decode(value)),
                _ => {
                    if is_password_key(key) {
                        secrets.push(value.to_string());
                        secrets.push(percent_decode(value));
                    }
                    kept.push(format!("{key}={value}"));
                }
            }
        }
        let url = if kept.is_empty() { url.to_string() } else { format!("{url}?{}", kept.join("&")) };
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::Postgres(what.clone(), scrub(&chain(&e), &secrets)))?;
        let tls_error = |why: String| StoreError::Tls(what.clone(), why);
        let (ssl, check) = match mode.as_deref().unwrap_or("prefer") {
            "disable" => {
                config.ssl_mode(postgres::config::SslMode::Disable);
                return Ok(PgTarget { config, tls: None, shown, secrets });
            }
            "prefer" => (postgres::config::SslMode::Prefer, Check::Nothing),
            "require" if rootcert.is_some() => (postgres::config::SslMode::Require, Check::Chain),
            "require" => (postgres::config::SslMode::Require, Check::Nothing),
            "verify-ca" => (postgres::config::SslMode::Require, Check::Chain),
            "verify-full" => (postgres::config::SslMode::Require, Check::ChainAndName),
            other => {
                let other: String = other.chars().filter(|c| !c.is_control()).take(32).collect();
                return Err(tls_error(format!(
                    "sslmode={other}: give disable, prefer (the default), require, verify-ca or verify-full"
                )));
            }
        };
        config.ssl_mode(ssl);
        let roots = match (&rootcert, check) {
            (None, Check::Nothing) => None,
            (None, _) => {
                return Err(tls_error(format!(
                    "sslmode={} checks the server's certificate: add sslrootcert=FILE (the PEM certificate of the \
                     CA that signed the server's) or sslrootcert=system (this machine's CAs)",
                    mode.as_deref().unwrap_or("")
                )))
            }
            (Some(file), _) => Some(root_store(file).map_err(tls_error)?),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?;
        let tls = match (check, roots) {
            (Check::Nothing, _) | (_, None) => {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(NoCheck(provider))).with_no_client_auth()
            }
            (Check::ChainAndName, Some(roots)) => builder.with_root_certificates(roots).with_no_client_auth(),
            (Check::Chain, Some(roots)) => {
                let full = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| tls_error(e.to_string()))?;
                builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(full))).with_no_client_auth()
            }
        };
        Ok(PgTarget { config, tls: Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls)), shown, secrets })
    }
}

/// Inserts one row; false when it was stored already.
pub(super) fn postgres_row(
    t: &mut postgres::Transaction<'_>,
    r: &Row,
    consumer: &str,
) -> Result<bool, postgres::Error> {
    match r {
        Row::Detections { device, pipeline, run, seq, ts_ms, frame, latency_ms, objects } => {
            let ts = *ts_ms as f64 / 1e3;
            let n = t.execute(
                "INSERT INTO lepton_messages (device, pipeline, run, seq, ts, frame, latency_ms, objects, consumer)
                 VALUES ($1, $2, $3, $4, to_timestamp($5), $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                &[device, pipeline, run, seq, &ts, frame, latency_ms, &(objects.len() as i32), &consumer],
            )?;
            if n == 0 {
                return Ok(false);
            }
            for (i, (label, score, b)) in objects.iter().enumerate() {
                t.execute(
                    "INSERT INTO lepton_detections (device, pipeline, run, seq, idx, ts, label, score, x0, y0, x1, y1, latency_ms)
                     VALUES ($1, $2, $3, $4, $5, to_timestamp($6), $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
                    &[
                        device, pipeline, run, seq, &(i as i32), &ts, label, score,
                        &b.map(|b| b[0]), &b.map(|b| b[1]), &b.map(|b| b[2]), &b.map(|b| b[3]), latency_ms,
                    ],
                )?;
            }
            Ok(true)
        }
        Row::Event { device, pipeline, run, ts_ms, label, event, score, duration_s } => Ok(t.execute(
            "INSERT INTO lepton_events (device, pipeline, run, ts, label, event, score, duration_s, consumer)
             VALUES ($1, $2, $3, to_timestamp($4), $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            &[device, pipeline, run, &(*ts_ms as f64 / 1e3), label, event, score, duration_s, &consumer],
        )? == 1),
    }
}

/// A row's values refused: SQLSTATE classes 22 (data exception), 23 (integrity constraint) and
/// 54 (program limit, e.g. an index row too large).
pub(super) fn postgres_data_error(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| ["22", "23", "54"].iter().any(|class| c.code().starts_with(class)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_checked_before_connecting_and_name_what_to_write() {
        let err = |spec: &str| PgTarget::parse(spec).err().map(|e| e.to_string()).unwrap_or_default();
        let e = err("postgres://u:pw1@h/db?sslmode=verify-full&password=pw2");
        assert!(e.contains("sslrootcert=FILE") && !e.contains("pw1") && !e.contains("pw2"), "{e}");
        let e = err("postgres://u@h/db?sslmode=sometimes");
        assert!(e.contains("sslmode=sometimes: give disable"), "{e}");
        let e = err("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem");
        assert!(e.contains("sslrootcert=/nonexistent/ca.pem"), "{e}");
        let e = err("postgres://u@h/db?sslmode=require&bogus=1&password=pw3");
        assert!(e.contains("bogus") && !e.contains("pw3") && e.contains("password=***"), "{e}");
        for ok in ["postgres://u@h/db", "postgres://u@h/db?sslmode=disable", "postgres://u:p@h/db?sslmode=require"] {
            assert!(PgTarget::parse(ok).is_ok(), "{ok}");
        }
        assert!(PgTarget::parse("postgres://u@h/db?sslmode=disable").unwrap().tls.is_none());
    }
}
