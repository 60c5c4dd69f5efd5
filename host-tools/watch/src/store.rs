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

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use std::sync::Arc;
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

/// Longest device, pipeline or label, in bytes.
pub const MAX_TEXT: usize = 256;
/// Most objects one detection message may carry.
pub const MAX_OBJECTS: usize = 1024;

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

/// What is wrong with a message the store cannot take (no text of the message is repeated but
/// numbers: a payload may hold anything, terminal escapes too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// One object of a detection message: label (or class index), score, box.
pub type Object = (String, f32, Option<[f32; 4]>);

/// One message to store.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// A detection message and its objects.
    Detections {
        /// Device id.
        device: String,
        /// Pipeline name.
        pipeline: String,
        /// The sender's run (0: a message without one).
        run: i64,
        /// The pipeline's message counter.
        seq: i64,
        /// Frame time, ms since 1970.
        ts_ms: i64,
        /// Frame index.
        frame: Option<i64>,
        /// Inference latency.
        latency_ms: Option<f64>,
        /// Label (or class index), score, box.
        objects: Vec<Object>,
    },
    /// A presence or keyword event.
    Event {
        /// Device id.
        device: String,
        /// Pipeline name.
        pipeline: String,
        /// The sender's run (0: a message without one).
        run: i64,
        /// Event time, ms since 1970.
        ts_ms: i64,
        /// Label (or class index).
        label: String,
        /// `start` or `end`.
        event: String,
        /// Score.
        score: f32,
        /// Duration of an ended presence.
        duration_s: Option<f64>,
    },
}

fn bad(what: &str, why: &str) -> Malformed {
    Malformed(format!("{what}: {why}"))
}

/// A number as a message shows it: short, in scientific notation when large.
fn num(x: f64) -> String {
    if x.abs() >= 1e9 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A device, pipeline or label: a string of 1 to [`MAX_TEXT`] bytes without control characters.
fn text(v: &Value, what: &str) -> Result<String, Malformed> {
    let s = match v {
        Value::Null => return Err(bad(what, "missing")),
        Value::String(s) => s,
        _ => return Err(bad(what, "not a string")),
    };
    if s.is_empty() {
        return Err(bad(what, "empty"));
    }
    if s.len() > MAX_TEXT {
        return Err(bad(what, &format!("{} bytes, more than {MAX_TEXT}", s.len())));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(what, "holds a control character"));
    }
    Ok(s.clone())
}

/// A whole number from 0 that fits a BIGINT; None when absent (or null).
fn counter(v: &Value, what: &str) -> Result<Option<i64>, Malformed> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i >= 0 => Ok(Some(i)),
            Some(i) => Err(bad(what, &format!("{i} is negative"))),
            None if n.is_u64() => Err(bad(what, &format!("{n} is too large"))),
            None => Err(bad(what, &format!("{n} is not a whole number"))),
        },
        _ => Err(bad(what, "not a number")),
    }
}

/// A finite number from 0 that fits an f64 column; None when absent (or null).
fn amount(v: &Value, what: &str) -> Result<Option<f64>, Malformed> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
            Some(x) => Err(bad(what, &format!("{} is not a finite number from 0", num(x)))),
            None => Err(bad(what, "not a number")),
        },
        _ => Err(bad(what, "not a number")),
    }
}

/// A score: a number from 0 to 1 (a hair above 1 is taken: dequantized outputs round).
fn score(v: &Value, what: &str) -> Result<f32, Malformed> {
    match v {
        Value::Null => Err(bad(what, "missing")),
        Value::Number(n) => match n.as_f64() {
            Some(x) if (0.0..=1.001).contains(&x) => Ok(x as f32),
            Some(x) => Err(bad(what, &format!("{} is out of 0..1", num(x)))),
            None => Err(bad(what, "not a number")),
        },
        _ => Err(bad(what, "not a number")),
    }
}

/// A box: four numbers that are finite as `f32`, or none.
fn bbox(v: &Value, what: &str) -> Result<Option<[f32; 4]>, Malformed> {
    let b = match v {
        Value::Null => return Ok(None),
        Value::Array(b) if b.len() == 4 => b,
        Value::Array(b) => return Err(bad(what, &format!("{} numbers, not 4", b.len()))),
        _ => return Err(bad(what, "not a list of 4 numbers")),
    };
    let mut out = [0f32; 4];
    for (o, x) in out.iter_mut().zip(b) {
        *o = match x.as_f64() {
            Some(x) if (x as f32).is_finite() => x as f32,
            Some(x) => return Err(bad(what, &format!("{} is not a finite number", num(x)))),
            None => return Err(bad(what, "not a list of 4 numbers")),
        };
    }
    Ok(Some(out))
}

/// A label, or a class index (postcard payloads) written as its number.
fn label(d: &Value, what: &str) -> Result<String, Malformed> {
    match (&d["label"], &d["class"]) {
        (Value::Null, Value::Null) => Err(bad(what, "no label (or class)")),
        (Value::Null, c) => match c.as_u64() {
            Some(c) if c <= u64::from(u16::MAX) => Ok(c.to_string()),
            _ => Err(bad(&format!("{what} class"), "not a class index (0 to 65535)")),
        },
        (l, _) => text(l, &format!("{what} label")),
    }
}

/// An RFC 3339 UTC time (`2026-12-01T10:00:00.250Z`) as ms since 1970.
fn time(v: &Value) -> Result<i64, Malformed> {
    let s = match v {
        Value::Null => return Err(bad("ts", "missing")),
        Value::String(s) => s,
        _ => return Err(bad("ts", "not a string")),
    };
    let t = humantime::parse_rfc3339(s)
        .map_err(|_| bad("ts", "not an RFC 3339 UTC time (like 2026-12-01T10:00:00.250Z)"))?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad("ts", "before 1970"))?.as_millis();
    i64::try_from(ms).map_err(|_| bad("ts", "out of range"))
}

impl Row {
    /// The row for a message `describe` understood. None for what is not stored (status,
    /// stats, snapshots, heard, the retained per-label copies of events, which are the events
    /// topic's again); an error saying what is wrong for a detection or event message with a
    /// field missing, of the wrong type, not finite or out of range, or an undecodable payload.
    pub fn from_message(v: &Value) -> Result<Option<Row>, Malformed> {
        let kind = v["kind"].as_str().unwrap_or("");
        if kind != "detections" && kind != "events" {
            return Ok(None);
        }
        let m = &v["message"];
        if let Some(n) = m.get("undecodable") {
            return Err(Malformed(format!("{n} bytes that are neither JSON nor a postcard message")));
        }
        if !m.is_object() {
            return Err(Malformed("not a JSON object".into()));
        }
        let device = text(&v["device"], "device (topic level)")?;
        let pipeline = text(&v["pipeline"], "pipeline (topic level)")?;
        let run = counter(&m["run"], "run")?.unwrap_or(0);
        let ts_ms = time(&m["ts"])?;
        if kind == "detections" {
            let seq = counter(&m["seq"], "seq")?.ok_or_else(|| bad("seq", "missing"))?;
            let frame = counter(&m["frame"], "frame")?;
            let latency_ms = amount(&m["latency_ms"], "latency_ms")?;
            let list = match &m["detections"] {
                Value::Array(a) => a,
                Value::Null => return Err(bad("detections", "missing")),
                _ => return Err(bad("detections", "not a list")),
            };
            if list.len() > MAX_OBJECTS {
                return Err(bad("detections", &format!("{} objects, more than {MAX_OBJECTS}", list.len())));
            }
            let objects = list
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let at = format!("detections[{i}]");
                    if !d.is_object() {
                        return Err(bad(&at, "not an object"));
                    }
                    Ok((
                        label(d, &at)?,
                        score(&d["score"], &format!("{at}.score"))?,
                        bbox(&d["box"], &format!("{at}.box"))?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Some(Row::Detections { device, pipeline, run, seq, ts_ms, frame, latency_ms, objects }));
        }
        let label = label(m, "event")?;
        let event = match &m["event"] {
            Value::String(e) if e == "start" || e == "end" => e.clone(),
            Value::Null => return Err(bad("event", "missing")),
            _ => return Err(bad("event", "neither \"start\" nor \"end\"")),
        };
        let score = score(&m["score"], "score")?;
        let duration_s = amount(&m["duration_s"], "duration_s")?;
        // The pipeline's events topic; the per-label copies (retained) are the same events.
        if !v["topic"].as_str().is_some_and(|t| t.ends_with("/events")) {
            return Ok(None);
        }
        Ok(Some(Row::Event { device, pipeline, run, ts_ms, label, event, score, duration_s }))
    }
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
    Postgres(Box<postgres::Client>),
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
    Postgres(postgres::Error),
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

impl From<postgres::Error> for WriteError {
    fn from(e: postgres::Error) -> Self {
        WriteError { data: postgres_data_error(&e), error: Failure::Postgres(e) }
    }
}

/// A row's values refused (a constraint, a type, a size), not a failure of the database.
fn sqlite_data_error(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            rusqlite::ErrorCode::ConstraintViolation | rusqlite::ErrorCode::TypeMismatch | rusqlite::ErrorCode::TooBig
        ),
        rusqlite::Error::ToSqlConversionFailure(_) => true,
        _ => false,
    }
}

/// A row's values refused: SQLSTATE classes 22 (data exception), 23 (integrity constraint) and
/// 54 (program limit, e.g. an index row too large).
fn postgres_data_error(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| ["22", "23", "54"].iter().any(|class| c.code().starts_with(class)))
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

fn open_sqlite(file: &str) -> Result<rusqlite::Connection, StoreError> {
    let what = format!("--store sqlite:{file}");
    let mut c = rusqlite::Connection::open(file).map_err(|e| StoreError::Sqlite(what.clone(), e))?;
    // Several consumers may share the file: WAL lets them read while one writes, and a
    // writer waits for another's transaction instead of failing.
    c.busy_timeout(Duration::from_secs(10)).map_err(|e| StoreError::Sqlite(what.clone(), e))?;
    // Switching to WAL and creating the tables can meet another consumer doing the same on a
    // new file: SQLite then answers "locked" without waiting, so wait here.
    let setup = |c: &mut rusqlite::Connection| -> rusqlite::Result<()> {
        c.pragma_update(None, "journal_mode", "wal")?;
        let t = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        sqlite_add_runs(&t)?;
        for (_, s) in SCHEMA {
            t.execute(s, [])?;
        }
        t.execute(INDEX, [])?;
        t.commit()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match setup(&mut c) {
            Ok(()) => return Ok(c),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(StoreError::Sqlite(what, e)),
        }
    }
}

/// Tables from before runs get `run` (0 for their rows) and the key with it. SQLite cannot
/// change a primary key: each such table is copied into one of the new schema.
fn sqlite_add_runs(t: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    for (table, create) in SCHEMA {
        let columns: Vec<String> = {
            let mut q = t.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
            let names = q.query_map([table], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            names
        };
        if columns.is_empty() || columns.iter().any(|c| c == "run") {
            continue;
        }
        let old = format!("{table}_before_runs");
        let list = columns.join(", ");
        t.execute_batch(&format!(
            "ALTER TABLE {table} RENAME TO {old};
             {create};
             INSERT INTO {table} ({list}) SELECT {list} FROM {old};
             DROP TABLE {old};"
        ))?;
    }
    Ok(())
}

fn open_postgres(target: PgTarget) -> Result<postgres::Client, StoreError> {
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
struct PgTarget {
    config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    shown: String,
    secrets: Vec<String>,
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
    fn parse(spec: &str) -> Result<PgTarget, StoreError> {
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

/// The CA certificates of `sslrootcert`: a PEM file, or `system` (this machine's).
fn root_store(file: &str) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = if file == "system" {
        rustls_native_certs::load_native_certs().certs
    } else {
        CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("sslrootcert={file}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("sslrootcert={file}: {e}"))?
    };
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("sslrootcert={file}: no CA certificate in it (PEM: -----BEGIN CERTIFICATE-----)"));
    }
    Ok(roots)
}

/// `prefer` and `require` without a CA: any certificate (the handshake's signatures are still
/// checked, so the channel is encrypted to whoever holds that certificate's key).
#[derive(Debug)]
struct NoCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain to the CA is checked, the name in the certificate is not (webpki
/// checks the name after the chain, so a name error means the chain passed).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Where the user information of a URL is: from after `scheme://` to its first `@` (as the
/// PostgreSQL driver reads it), if any.
fn userinfo_end(spec: &str) -> Option<(usize, usize)> {
    let start = spec.find("://")? + 3;
    let at = spec[start..].find('@')? + start;
    Some((start, at))
}

/// The password in a URL's user information, as written (as the driver reads it).
fn userinfo_password(spec: &str) -> Option<&str> {
    let (start, at) = userinfo_end(spec)?;
    spec[start..at].split_once(':').map(|(_, p)| p)
}

/// The URL before its `?` (the first after the user information), and its parameters as
/// written (key, value), in order.
fn split_params(spec: &str) -> (&str, Vec<(&str, &str)>) {
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
fn is_password_key(key: &str) -> bool {
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

/// RFC 3339 with milliseconds, as SQLite keeps times (text that sorts in time order).
fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// Inserts one row; false when it was stored already.
fn sqlite_row(t: &rusqlite::Connection, r: &Row, consumer: &str) -> rusqlite::Result<bool> {
    match r {
        Row::Detections { device, pipeline, run, seq, ts_ms, frame, latency_ms, objects } => {
            let ts = rfc3339(*ts_ms);
            let n = t.execute(
                "INSERT INTO lepton_messages (device, pipeline, run, seq, ts, frame, latency_ms, objects, consumer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                rusqlite::params![device, pipeline, run, seq, ts, frame, latency_ms, objects.len() as i64, consumer],
            )?;
            if n == 0 {
                return Ok(false);
            }
            for (i, (label, score, b)) in objects.iter().enumerate() {
                t.execute(
                    "INSERT INTO lepton_detections (device, pipeline, run, seq, idx, ts, label, score, x0, y0, x1, y1, latency_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT DO NOTHING",
                    rusqlite::params![
                        device, pipeline, run, seq, i as i64, ts, label, score,
                        b.map(|b| b[0]), b.map(|b| b[1]), b.map(|b| b[2]), b.map(|b| b[3]), latency_ms
                    ],
                )?;
            }
            Ok(true)
        }
        Row::Event { device, pipeline, run, ts_ms, label, event, score, duration_s } => Ok(t.execute(
            "INSERT INTO lepton_events (device, pipeline, run, ts, label, event, score, duration_s, consumer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
            rusqlite::params![device, pipeline, run, rfc3339(*ts_ms), label, event, score, duration_s, consumer],
        )? == 1),
    }
}

/// Inserts one row; false when it was stored already.
fn postgres_row(t: &mut postgres::Transaction<'_>, r: &Row, consumer: &str) -> Result<bool, postgres::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe;

    fn detections(seq: u32) -> Value {
        let payload = serde_json::json!({
            "device": "cam1", "pipeline": "front", "seq": seq, "ts": "2026-11-30T10:00:00.250Z", "frame": 7,
            "latency_ms": 0.4, "detections": [{"label": "3", "score": 0.9, "box": [1.0, 2.0, 3.0, 4.0]}, {"label": "7", "score": 0.8}],
        });
        describe("lepton/cam1/front/detections", payload.to_string().as_bytes(), "lepton")
    }

    fn row(v: &Value) -> Row {
        Row::from_message(v).unwrap().unwrap()
    }

    #[test]
    fn sqlite_stores_each_message_once_and_shares_the_file() {
        let dir = std::env::temp_dir().join(format!("lepton-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("events.db");
        let _ = std::fs::remove_file(&file);
        let spec = format!("sqlite:{}", file.display());
        let mut a = Store::open(&spec, "a").unwrap();
        let mut b = Store::open(&spec, "b").unwrap();
        for seq in 0..3 {
            a.add(row(&detections(seq)));
        }
        a.commit().unwrap();
        // A redelivery of seq 1 to another consumer of the group, and a new one.
        b.add(row(&detections(1)));
        b.add(row(&detections(3)));
        let ev = describe(
            "lepton/cam1/front/events",
            br#"{"ts":"2026-11-30T10:00:01Z","label":"3","event":"start","score":0.9}"#,
            "lepton",
        );
        b.add(row(&ev));
        let copy = describe(
            "lepton/cam1/front/events/3",
            br#"{"ts":"2026-11-30T10:00:01Z","label":"3","event":"start","score":0.9}"#,
            "lepton",
        );
        assert_eq!(Row::from_message(&copy), Ok(None), "the per-label copy is not stored twice");
        b.commit().unwrap();
        assert_eq!((a.stats.messages, a.stats.duplicates), (3, 0));
        assert_eq!((b.stats.messages, b.stats.duplicates, b.stats.events), (1, 1, 1));
        let c = rusqlite::Connection::open(&file).unwrap();
        let n: i64 = c.query_row("SELECT count(*) FROM lepton_messages", [], |r| r.get(0)).unwrap();
        let boxes: i64 =
            c.query_row("SELECT count(*) FROM lepton_detections WHERE x0 IS NOT NULL", [], |r| r.get(0)).unwrap();
        let by_b: i64 =
            c.query_row("SELECT count(*) FROM lepton_messages WHERE consumer = 'b'", [], |r| r.get(0)).unwrap();
        assert_eq!((n, boxes, by_b), (4, 4, 1));
        let ts: String = c.query_row("SELECT ts FROM lepton_messages WHERE seq = 0", [], |r| r.get(0)).unwrap();
        assert_eq!(ts, "2026-11-30T10:00:00.250Z");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn consumers_starting_together_on_a_new_sqlite_file_all_open_it() {
        let dir = std::env::temp_dir().join(format!("lepton-store-together-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = format!("sqlite:{}", dir.join("shared.db").display());
        let opened: Vec<_> = (0..4)
            .map(|i| {
                let spec = spec.clone();
                std::thread::spawn(move || {
                    let mut s = Store::open(&spec, &format!("c{i}"))?;
                    s.add(row(&detections(i)));
                    s.commit()
                })
            })
            .collect();
        for t in opened {
            t.join().unwrap().unwrap();
        }
        let c = rusqlite::Connection::open(dir.join("shared.db")).unwrap();
        let n: i64 = c.query_row("SELECT count(DISTINCT consumer) FROM lepton_messages", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 4);
        let _ = std::fs::remove_dir_all(&dir);
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

    /// A payload on a topic, understood, then checked.
    fn check(topic: &str, payload: &str) -> Result<Option<Row>, Malformed> {
        Row::from_message(&describe(topic, payload.as_bytes(), "lepton"))
    }

    #[test]
    fn every_field_a_row_takes_is_checked() {
        let d = "lepton/cam1/front/detections";
        let ok = r#"{"run":3,"seq":1,"ts":"2026-12-01T10:00:00Z","frame":2,"latency_ms":0.5,"detections":[{"label":"p","score":1.0,"box":[0,1,2,3]},{"class":7,"score":0}]}"#;
        match check(d, ok) {
            Ok(Some(Row::Detections { run: 3, seq: 1, frame: Some(2), objects, .. })) => {
                assert_eq!(objects[1], ("7".to_string(), 0.0, None));
            }
            other => panic!("{other:?}"),
        }
        let bad = [
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"p"}]}"#, "detections[0].score: missing"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"p","score":"x"}]}"#, "not a number"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"p","score":1.5}]}"#, "out of 0..1"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"score":0.5}]}"#, "no label"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"class":70000,"score":0.5}]}"#, "class"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"\u001b[2J","score":0.5}]}"#, "control"),
            (
                r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"p","score":0.5,"box":[0,0,1]}]}"#,
                "3 numbers",
            ),
            (
                r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{"label":"p","score":0.5,"box":[0,0,1,1e39]}]}"#,
                "finite",
            ),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[7]}"#, "not an object"),
            (r#"{"ts":"2026-12-01T10:00:00Z","detections":[]}"#, "seq: missing"),
            (r#"{"seq":9223372036854775808,"ts":"2026-12-01T10:00:00Z","detections":[]}"#, "too large"),
            (r#"{"seq":1,"ts":"1969-12-31T23:59:59Z","detections":[]}"#, "ts: "),
            (r#"{"seq":1,"ts":12,"detections":[]}"#, "ts: not a string"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","frame":0.5,"detections":[]}"#, "whole number"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z","latency_ms":-1,"detections":[]}"#, "latency_ms"),
            (r#"{"seq":1,"ts":"2026-12-01T10:00:00Z"}"#, "detections: missing"),
            (r#"{"seq":1,"run":"a","ts":"2026-12-01T10:00:00Z","detections":[]}"#, "run: not a number"),
            ("[1, 2]", "not a JSON object"),
        ];
        for (payload, why) in bad {
            let e = check(d, payload).expect_err(payload).to_string();
            assert!(e.contains(why), "{payload}: {e}");
        }
        let many = format!(
            r#"{{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{}]}}"#,
            vec![r#"{"label":"p","score":0.5}"#; MAX_OBJECTS + 1].join(",")
        );
        assert!(check(d, &many).is_err());
        let long = format!(
            r#"{{"seq":1,"ts":"2026-12-01T10:00:00Z","detections":[{{"label":"{}","score":0.5}}]}}"#,
            "x".repeat(MAX_TEXT + 1)
        );
        assert!(check(d, &long).is_err());
        assert!(check("lepton//front/detections", ok).unwrap_err().to_string().contains("device"));
        assert!(check(d, "\u{1}\u{2}").unwrap_err().to_string().contains("neither JSON nor a postcard"));

        let e = "lepton/cam1/front/events";
        assert!(matches!(
            check(e, r#"{"ts":"2026-12-01T10:00:00Z","label":"p","event":"end","score":0.5,"duration_s":2.5}"#),
            Ok(Some(Row::Event { run: 0, duration_s: Some(_), .. }))
        ));
        for (payload, why) in [
            (r#"{"ts":"2026-12-01T10:00:00Z","label":"p","event":"start"}"#, "score: missing"),
            (r#"{"ts":"2026-12-01T10:00:00Z","label":"p","event":"begin","score":0.5}"#, "event: neither"),
            (r#"{"ts":"2026-12-01T10:00:00Z","event":"start","score":0.5}"#, "no label"),
            (r#"{"label":"p","event":"start","score":0.5}"#, "ts: missing"),
            (r#"{"ts":"2026-12-01T10:00:00Z","label":"p","event":"end","score":0.5,"duration_s":"x"}"#, "duration_s"),
        ] {
            let err = check(e, payload).expect_err(payload).to_string();
            assert!(err.contains(why), "{payload}: {err}");
        }
        // A malformed retained copy is malformed too (it is shown, not stored).
        assert!(check("lepton/cam1/front/events/p", r#"{"ts":"x"}"#).is_err());
    }

    #[test]
    fn a_store_from_before_runs_gets_them_and_keeps_its_rows() {
        let dir = std::env::temp_dir().join(format!("lepton-store-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("old.db");
        {
            let c = rusqlite::Connection::open(&file).unwrap();
            c.execute_batch(
                "CREATE TABLE lepton_messages (device TEXT NOT NULL, pipeline TEXT NOT NULL, seq BIGINT NOT NULL,
                    ts TIMESTAMPTZ NOT NULL, frame BIGINT, latency_ms DOUBLE PRECISION, objects INTEGER NOT NULL,
                    consumer TEXT NOT NULL, PRIMARY KEY (device, pipeline, seq));
                 CREATE TABLE lepton_detections (device TEXT NOT NULL, pipeline TEXT NOT NULL, seq BIGINT NOT NULL,
                    idx INTEGER NOT NULL, ts TIMESTAMPTZ NOT NULL, label TEXT NOT NULL, score REAL NOT NULL,
                    x0 REAL, y0 REAL, x1 REAL, y1 REAL, latency_ms DOUBLE PRECISION, PRIMARY KEY (device, pipeline, seq, idx));
                 CREATE INDEX lepton_detections_by_time ON lepton_detections (device, ts);
                 INSERT INTO lepton_messages VALUES ('cam1', 'front', 0, '2026-11-30T10:00:00.250Z', 7, 0.4, 1, 'old');
                 INSERT INTO lepton_detections VALUES ('cam1', 'front', 0, 0, '2026-11-30T10:00:00.250Z', '3', 0.9, 1, 2, 3, 4, 0.4);",
            )
            .unwrap();
        }
        let spec = format!("sqlite:{}", file.display());
        let mut s = Store::open(&spec, "new").unwrap();
        s.add(row(&detections(0)));
        let mut again = detections(0);
        again["message"]["run"] = 9.into();
        s.add(row(&again));
        s.commit().unwrap();
        assert_eq!((s.stats.messages, s.stats.duplicates), (1, 1), "run 0 is the old rows' run");
        drop(s);
        // Opening it again changes nothing.
        Store::open(&spec, "new").unwrap();
        let c = rusqlite::Connection::open(&file).unwrap();
        let q = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(q("SELECT count(*) FROM lepton_messages WHERE consumer = 'old' AND run = 0"), 1);
        assert_eq!(q("SELECT count(*) FROM lepton_messages WHERE run = 9"), 1);
        assert_eq!(q("SELECT count(*) FROM lepton_detections"), 3);
        assert_eq!(q("SELECT count(*) FROM sqlite_master WHERE name = 'lepton_detections_by_time'"), 1);
        assert_eq!(q("SELECT count(*) FROM sqlite_master WHERE name LIKE '%before_runs'"), 0);
        let _ = std::fs::remove_dir_all(&dir);
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
