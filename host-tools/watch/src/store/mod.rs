//! The event store: detections and events written into SQLite (`sqlite:FILE`) or PostgreSQL
//! (`postgres://…`, over TLS when asked) tables, each message once. QoS 1 delivers at least
//! once, so a redelivered message meets the unique key (device, pipeline, run, seq) and is
//! counted as a duplicate, never stored twice; `run` tells a restarted daemon's messages (whose
//! `seq` starts at 0 again) from the last run's. Rows are written in batches, one transaction
//! each; the caller acknowledges the messages of a batch only after its commit, so a consumer
//! that dies loses nothing it acknowledged.
//!
//! Messages come from any client of the broker: every field a row takes is checked first
//! ([`Row::from_message`]); a message that fails is counted and skipped, never the end of the
//! consumer, and a row the database still refuses is skipped alone, not with its batch.
//!
//! Here: the shared API ([`Store`], its errors and counts) and the tables' SQL; the rows and their
//! checks are in `row`, each database in `sqlite` and `postgres`, the connection string in `url`
//! and the certificate checks in `tls`.

mod postgres;
mod row;
mod sqlite;
mod tls;
mod url;

pub use row::{Malformed, Object, Row, MAX_OBJECTS, MAX_TEXT};
pub use url::redact;

use self::postgres::{open_postgres, postgres_data_error, postgres_row, PgTarget};
use sqlite::{open_sqlite, sqlite_data_error, sqlite_row};
use std::time::{Duration, Instant};

/// Rows written per transaction at most.
pub const BATCH: usize = 500;
/// Longest time a message waits for its batch's commit.
pub const BATCH_WAIT: Duration = Duration::from_millis(200);

/// The tables, in SQL both databases accept (see README, "The event store"). `run` comes last:
/// a store from before runs gets it as its last column.
const SCHEMA: &[(&str, &str)] = &[
    (
        "lepton_messages",
        "CREATE TABLE IF NOT EXISTS lepton_messages (
        device TEXT NOT NULL, pipeline TEXT NOT NULL, seq BIGINT NOT NULL,
        ts TIMESTAMPTZ NOT NULL, frame BIGINT, latency_ms DOUBLE PRECISION, objects INTEGER NOT NULL,
        consumer TEXT NOT NULL, run BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (device, pipeline, run, seq))",
    ),
    (
        "lepton_detections",
        "CREATE TABLE IF NOT EXISTS lepton_detections (
        device TEXT NOT NULL, pipeline TEXT NOT NULL, seq BIGINT NOT NULL, idx INTEGER NOT NULL,
        ts TIMESTAMPTZ NOT NULL, label TEXT NOT NULL, score REAL NOT NULL,
        x0 REAL, y0 REAL, x1 REAL, y1 REAL, latency_ms DOUBLE PRECISION, run BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (device, pipeline, run, seq, idx))",
    ),
    (
        "lepton_events",
        "CREATE TABLE IF NOT EXISTS lepton_events (
        device TEXT NOT NULL, pipeline TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL, label TEXT NOT NULL,
        event TEXT NOT NULL, score REAL NOT NULL, duration_s DOUBLE PRECISION, consumer TEXT NOT NULL,
        run BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (device, pipeline, run, ts, label, event))",
    ),
];

/// Each table's key since runs (the key before runs lacked `run`).
const KEYS: &[(&str, &str)] = &[
    ("lepton_messages", "device, pipeline, run, seq"),
    ("lepton_detections", "device, pipeline, run, seq, idx"),
    ("lepton_events", "device, pipeline, run, ts, label, event"),
];

/// Created after the tables (and after a migration, which drops the old one with its table).
const INDEX: &str = "CREATE INDEX IF NOT EXISTS lepton_detections_by_time ON lepton_detections (device, ts)";

/// What the store could not do. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `--store` names no known kind of database.
    #[error("--store {0}: give sqlite:FILE or postgres://USER@HOST[:PORT]/DATABASE")]
    Kind(String),
    /// SQLite failed.
    #[error("{0}: {1}")]
    Sqlite(String, rusqlite::Error),
    /// PostgreSQL failed: what was done, and the error with its causes (without secrets).
    #[error("{0}: {1}")]
    Postgres(String, String),
    /// The TLS settings of a `postgres://` store are not usable.
    #[error("{0}: {1}")]
    Tls(String, String),
}

/// Counts, for the summary at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Detection messages stored.
    pub messages: u64,
    /// Events stored.
    pub events: u64,
    /// Messages that were stored already (redeliveries).
    pub duplicates: u64,
    /// Messages skipped: malformed, or refused by the database.
    pub malformed: u64,
    /// Transactions committed.
    pub commits: u64,
}

enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<::postgres::Client>),
}

/// A database with Lepton's tables, and the batch waiting for its commit.
pub struct Store {
    db: Db,
    what: String,
    secrets: Vec<String>,
    consumer: String,
    batch: Vec<Row>,
    since: Option<Instant>,
    /// Counts so far.
    pub stats: StoreStats,
}

impl Store {
    /// Opens `spec` (`sqlite:FILE` or `postgres://…`), creating the tables on first use and
    /// giving the tables of a store from before runs their `run` column and key; `consumer`
    /// is written beside each row (which consumer of a group stored it).
    pub fn open(spec: &str, consumer: &str) -> Result<Store, StoreError> {
        let (db, what, secrets) = if let Some(file) = spec.strip_prefix("sqlite:") {
            (Db::Sqlite(open_sqlite(file)?), spec.to_string(), vec![])
        } else if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            let target = PgTarget::parse(spec)?;
            let shown = target.shown.clone();
            let secrets = target.secrets.clone();
            (Db::Postgres(Box::new(open_postgres(target)?)), shown, secrets)
        } else {
            return Err(StoreError::Kind(redact(spec)));
        };
        Ok(Store {
            db,
            what,
            secrets,
            consumer: consumer.to_string(),
            batch: vec![],
            since: None,
            stats: StoreStats::default(),
        })
    }

    /// Where the rows go, without a password.
    pub fn name(&self) -> &str {
        &self.what
    }

    /// Adds a row to the batch.
    pub fn add(&mut self, row: Row) {
        self.since.get_or_insert_with(Instant::now);
        self.batch.push(row);
    }

    /// Whether the batch should be committed now (full, or its oldest row waited long enough).
    pub fn due(&self) -> bool {
        self.batch.len() >= BATCH || self.since.is_some_and(|t| t.elapsed() >= BATCH_WAIT)
    }

    /// Writes the batch in one transaction. A row the database refuses (a constraint or a value
    /// it cannot take) does not take its batch with it: the batch is written again row by row
    /// (a savepoint each), and the refused rows are counted as malformed.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            self.since = None;
            return Ok(());
        }
        let rows = std::mem::take(&mut self.batch);
        let what = format!("{} (storing {} rows)", self.what, rows.len());
        let counts = match self.write(&rows, false) {
            Err(e) if e.data => self.write(&rows, true),
            r => r,
        }
        .map_err(|e| match e.error {
            Failure::Sqlite(e) => StoreError::Sqlite(what.clone(), e),
            Failure::Postgres(e) => StoreError::Postgres(what.clone(), scrub(&chain(&e), &self.secrets)),
        })?;
        self.stats.messages += counts.messages;
        self.stats.events += counts.events;
        self.stats.duplicates += counts.duplicates;
        self.stats.malformed += counts.refused;
        self.stats.commits += 1;
        self.since = None;
        Ok(())
    }

    /// One transaction of `rows`; `careful`: a savepoint per row, and the rows the database
    /// refuses skipped.
    fn write(&mut self, rows: &[Row], careful: bool) -> Result<Counts, WriteError> {
        let mut n = Counts::default();
        let consumer = self.consumer.as_str();
        match &mut self.db {
            Db::Sqlite(c) => {
                let mut t = c.transaction()?;
                for r in rows {
                    if careful {
                        let sp = t.savepoint()?;
                        match sqlite_row(&sp, r, consumer) {
                            Ok(new) => {
                                sp.commit()?;
                                n.count(r, new);
                            }
                            // Dropping the savepoint rolls the row back.
                            Err(e) if sqlite_data_error(&e) => n.refused += 1,
                            Err(e) => return Err(e.into()),
                        }
                    } else {
                        n.count(r, sqlite_row(&t, r, consumer)?);
                    }
                }
                t.commit()?;
            }
            Db::Postgres(c) => {
                let mut t = c.transaction()?;
                for r in rows {
                    if careful {
                        let mut sp = t.transaction()?;
                        match postgres_row(&mut sp, r, consumer) {
                            Ok(new) => {
                                sp.commit()?;
                                n.count(r, new);
                            }
                            Err(e) if postgres_data_error(&e) => {
                                sp.rollback()?;
                                n.refused += 1;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    } else {
                        n.count(r, postgres_row(&mut t, r, consumer)?);
                    }
                }
                t.commit()?;
            }
        }
        Ok(n)
    }
}

/// What one transaction stored.
#[derive(Debug, Default)]
struct Counts {
    messages: u64,
    events: u64,
    duplicates: u64,
    refused: u64,
}

impl Counts {
    fn count(&mut self, r: &Row, new: bool) {
        match (r, new) {
            (_, false) => self.duplicates += 1,
            (Row::Detections { .. }, true) => self.messages += 1,
            (Row::Event { .. }, true) => self.events += 1,
        }
    }
}

enum Failure {
    Sqlite(rusqlite::Error),
    Postgres(::postgres::Error),
}

/// A failed transaction; `data`: because of a row's values (not the connection or the disk).
struct WriteError {
    error: Failure,
    data: bool,
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        WriteError { data: sqlite_data_error(&e), error: Failure::Sqlite(e) }
    }
}

impl From<::postgres::Error> for WriteError {
    fn from(e: ::postgres::Error) -> Self {
        WriteError { data: postgres_data_error(&e), error: Failure::Postgres(e) }
    }
}

/// An error and its causes, one after the other.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

/// `text` with every secret in it replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().filter(|s| !s.is_empty()).fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe;
    use serde_json::Value;

    pub(super) fn detections(seq: u32) -> Value {
        let payload = serde_json::json!({
            "device": "cam1", "pipeline": "front", "seq": seq, "ts": "2026-11-30T10:00:00.250Z", "frame": 7,
            "latency_ms": 0.4, "detections": [{"label": "3", "score": 0.9, "box": [1.0, 2.0, 3.0, 4.0]}, {"label": "7", "score": 0.8}],
        });
        describe("lepton/cam1/front/detections", payload.to_string().as_bytes(), "lepton")
    }

    pub(super) fn row(v: &Value) -> Row {
        Row::from_message(v).unwrap().unwrap()
    }

    #[test]
    fn what_is_not_a_detection_or_event_is_not_stored_and_bad_specs_are_named() {
        let status = describe("lepton/cam1/status", b"online", "lepton");
        assert_eq!(Row::from_message(&status), Ok(None));
        let e = Store::open("mysql://x", "a").err().unwrap().to_string();
        assert!(e.contains("--store mysql://x") && e.contains("sqlite:FILE"), "{e}");
        let e = Store::open("mysql://u:secret@x", "a").err().unwrap().to_string();
        assert!(e.contains("--store mysql://u:***@x") && !e.contains("secret"), "{e}");
        let e = Store::open("sqlite:/nonexistent-dir/x.db", "a").err().unwrap().to_string();
        assert!(e.contains("--store sqlite:/nonexistent-dir/x.db"), "{e}");
    }

    #[test]
    fn a_row_the_database_refuses_is_skipped_alone() {
        let dir = std::env::temp_dir().join(format!("lepton-store-refused-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = format!("sqlite:{}", dir.join("s.db").display());
        let mut s = Store::open(&spec, "a").unwrap();
        // What the checks let through but a database may refuse: here a trigger stands for it.
        if let Db::Sqlite(c) = &s.db {
            c.execute_batch(
                "CREATE TRIGGER no_seven BEFORE INSERT ON lepton_messages WHEN NEW.seq = 7
                 BEGIN SELECT RAISE(ABORT, 'seven'); END;",
            )
            .unwrap();
        }
        for seq in [6, 7, 8] {
            s.add(row(&detections(seq)));
        }
        s.commit().unwrap();
        assert_eq!((s.stats.messages, s.stats.malformed), (2, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
