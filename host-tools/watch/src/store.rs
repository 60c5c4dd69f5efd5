//! The event store: detections and events written into SQLite (`sqlite:FILE`) or PostgreSQL
//! (`postgres://…`) tables, each message once. QoS 1 delivers at least once, so a redelivered
//! message meets the unique key (device, pipeline, seq) and is counted as a duplicate, never
//! stored twice. Rows are written in batches, one transaction each; the caller acknowledges the
//! messages of a batch only after its commit, so a consumer that dies loses nothing it acknowledged.

use serde_json::Value;
use std::time::{Duration, Instant};

/// Rows written per transaction at most.
pub const BATCH: usize = 500;
/// Longest time a message waits for its batch's commit.
pub const BATCH_WAIT: Duration = Duration::from_millis(200);

/// The tables, in SQL both databases accept (see README, "The event store").
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS lepton_messages (
        device TEXT NOT NULL, pipeline TEXT NOT NULL, seq BIGINT NOT NULL,
        ts TIMESTAMPTZ NOT NULL, frame BIGINT, latency_ms DOUBLE PRECISION, objects INTEGER NOT NULL,
        consumer TEXT NOT NULL,
        PRIMARY KEY (device, pipeline, seq))",
    "CREATE TABLE IF NOT EXISTS lepton_detections (
        device TEXT NOT NULL, pipeline TEXT NOT NULL, seq BIGINT NOT NULL, idx INTEGER NOT NULL,
        ts TIMESTAMPTZ NOT NULL, label TEXT NOT NULL, score REAL NOT NULL,
        x0 REAL, y0 REAL, x1 REAL, y1 REAL, latency_ms DOUBLE PRECISION,
        PRIMARY KEY (device, pipeline, seq, idx))",
    "CREATE TABLE IF NOT EXISTS lepton_events (
        device TEXT NOT NULL, pipeline TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL, label TEXT NOT NULL,
        event TEXT NOT NULL, score REAL NOT NULL, duration_s DOUBLE PRECISION, consumer TEXT NOT NULL,
        PRIMARY KEY (device, pipeline, ts, label, event))",
    "CREATE INDEX IF NOT EXISTS lepton_detections_by_time ON lepton_detections (device, ts)",
];

/// What the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `--store` names no known kind of database.
    #[error("--store {0}: give sqlite:FILE or postgres://USER@HOST[:PORT]/DATABASE")]
    Kind(String),
    /// SQLite failed.
    #[error("{0}: {1}")]
    Sqlite(String, rusqlite::Error),
    /// PostgreSQL failed.
    #[error("{0}: {1}")]
    Postgres(String, postgres::Error),
}

/// One message to store.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// A detection message and its objects.
    Detections {
        /// Device id.
        device: String,
        /// Pipeline name.
        pipeline: String,
        /// The pipeline's message counter.
        seq: i64,
        /// Frame time, ms since 1970.
        ts_ms: i64,
        /// Frame index.
        frame: Option<i64>,
        /// Inference latency.
        latency_ms: Option<f64>,
        /// Label (or class index), score, box.
        objects: Vec<(String, f32, Option<[f32; 4]>)>,
    },
    /// A presence or keyword event.
    Event {
        /// Device id.
        device: String,
        /// Pipeline name.
        pipeline: String,
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

impl Row {
    /// The row for a message `describe` understood; None for what is not stored (status,
    /// stats, snapshots, undecodable payloads).
    pub fn from_message(v: &Value) -> Option<Row> {
        let m = &v["message"];
        let device = v["device"].as_str()?.to_string();
        let pipeline = v["pipeline"].as_str()?.to_string();
        let ts_ms =
            humantime::parse_rfc3339(m["ts"].as_str()?).ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()
                as i64;
        let label = |d: &Value| d["label"].as_str().map(str::to_string).unwrap_or_else(|| d["class"].to_string());
        match v["kind"].as_str()? {
            "detections" => {
                let objects = m["detections"]
                    .as_array()?
                    .iter()
                    .map(|d| {
                        let b = d["box"].as_array().filter(|b| b.len() == 4).map(|b| {
                            let f = |i: usize| b[i].as_f64().unwrap_or(f64::NAN) as f32;
                            [f(0), f(1), f(2), f(3)]
                        });
                        (label(d), d["score"].as_f64().unwrap_or(f64::NAN) as f32, b)
                    })
                    .collect();
                Some(Row::Detections {
                    device,
                    pipeline,
                    seq: m["seq"].as_i64()?,
                    ts_ms,
                    frame: m["frame"].as_i64(),
                    latency_ms: m["latency_ms"].as_f64(),
                    objects,
                })
            }
            // The pipeline's events topic; the per-label copies (retained) are the same events.
            "events" if v["topic"].as_str()?.ends_with("/events") => Some(Row::Event {
                device,
                pipeline,
                ts_ms,
                label: label(m),
                event: m["event"].as_str()?.to_string(),
                score: m["score"].as_f64().unwrap_or(f64::NAN) as f32,
                duration_s: m["duration_s"].as_f64(),
            }),
            _ => None,
        }
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
    consumer: String,
    batch: Vec<Row>,
    since: Option<Instant>,
    /// Counts so far.
    pub stats: StoreStats,
}

impl Store {
    /// Opens `spec` (`sqlite:FILE` or `postgres://…`), creating the tables on first use;
    /// `consumer` is written beside each row (which consumer of a group stored it).
    pub fn open(spec: &str, consumer: &str) -> Result<Store, StoreError> {
        let db = if let Some(file) = spec.strip_prefix("sqlite:") {
            let what = format!("--store sqlite:{file}");
            let c = rusqlite::Connection::open(file).map_err(|e| StoreError::Sqlite(what.clone(), e))?;
            // Several consumers may share the file: WAL lets them read while one writes, and a
            // writer waits for another's transaction instead of failing.
            c.busy_timeout(Duration::from_secs(10)).map_err(|e| StoreError::Sqlite(what.clone(), e))?;
            // Switching to WAL and creating the tables can meet another consumer doing the
            // same on a new file: SQLite then answers "locked" without waiting, so wait here.
            let setup = |c: &rusqlite::Connection| -> rusqlite::Result<()> {
                c.pragma_update(None, "journal_mode", "wal")?;
                for s in SCHEMA {
                    c.execute(s, [])?;
                }
                Ok(())
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match setup(&c) {
                    Ok(()) => break,
                    Err(rusqlite::Error::SqliteFailure(f, _))
                        if matches!(
                            f.code,
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        ) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(StoreError::Sqlite(what, e)),
                }
            }
            Db::Sqlite(c)
        } else if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            let what = format!("--store {}", redact(spec));
            let mut c =
                postgres::Client::connect(spec, postgres::NoTls).map_err(|e| StoreError::Postgres(what.clone(), e))?;
            for s in SCHEMA {
                // Concurrent consumers may create the tables at once: one wins, the others see them.
                if let Err(e) = c.batch_execute(s) {
                    let race = e.code().is_some_and(|c| {
                        *c == postgres::error::SqlState::UNIQUE_VIOLATION
                            || *c == postgres::error::SqlState::DUPLICATE_TABLE
                    });
                    if !race {
                        return Err(StoreError::Postgres(what, e));
                    }
                }
            }
            Db::Postgres(Box::new(c))
        } else {
            return Err(StoreError::Kind(spec.to_string()));
        };
        let what = match &db {
            Db::Sqlite(_) => spec.to_string(),
            Db::Postgres(_) => redact(spec),
        };
        Ok(Store { db, what, consumer: consumer.to_string(), batch: vec![], since: None, stats: StoreStats::default() })
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

    /// Writes the batch in one transaction.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            self.since = None;
            return Ok(());
        }
        let rows = std::mem::take(&mut self.batch);
        let (mut messages, mut events, mut duplicates) = (0, 0, 0);
        let what = format!("{} (storing {} rows)", self.what, rows.len());
        match &mut self.db {
            Db::Sqlite(c) => {
                let t = c.transaction().map_err(|e| StoreError::Sqlite(what.clone(), e))?;
                for r in &rows {
                    let new = sqlite_row(&t, r, &self.consumer).map_err(|e| StoreError::Sqlite(what.clone(), e))?;
                    count(r, new, &mut messages, &mut events, &mut duplicates);
                }
                t.commit().map_err(|e| StoreError::Sqlite(what.clone(), e))?;
            }
            Db::Postgres(c) => {
                let mut t = c.transaction().map_err(|e| StoreError::Postgres(what.clone(), e))?;
                for r in &rows {
                    let new =
                        postgres_row(&mut t, r, &self.consumer).map_err(|e| StoreError::Postgres(what.clone(), e))?;
                    count(r, new, &mut messages, &mut events, &mut duplicates);
                }
                t.commit().map_err(|e| StoreError::Postgres(what.clone(), e))?;
            }
        }
        self.stats.messages += messages;
        self.stats.events += events;
        self.stats.duplicates += duplicates;
        self.stats.commits += 1;
        self.since = None;
        Ok(())
    }
}

fn count(r: &Row, new: bool, messages: &mut u64, events: &mut u64, duplicates: &mut u64) {
    match (r, new) {
        (_, false) => *duplicates += 1,
        (Row::Detections { .. }, true) => *messages += 1,
        (Row::Event { .. }, true) => *events += 1,
    }
}

/// A connection string without its password.
fn redact(spec: &str) -> String {
    match (spec.find("://"), spec.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &spec[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &spec[..s + 3], &spec[at..]),
                None => spec.to_string(),
            }
        }
        _ => spec.to_string(),
    }
}

/// RFC 3339 with milliseconds, as SQLite keeps times (text that sorts in time order).
fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// Inserts one row; false when it was stored already.
fn sqlite_row(t: &rusqlite::Transaction<'_>, r: &Row, consumer: &str) -> rusqlite::Result<bool> {
    match r {
        Row::Detections { device, pipeline, seq, ts_ms, frame, latency_ms, objects } => {
            let ts = rfc3339(*ts_ms);
            let n = t.execute(
                "INSERT INTO lepton_messages (device, pipeline, seq, ts, frame, latency_ms, objects, consumer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                rusqlite::params![device, pipeline, seq, ts, frame, latency_ms, objects.len() as i64, consumer],
            )?;
            if n == 0 {
                return Ok(false);
            }
            for (i, (label, score, b)) in objects.iter().enumerate() {
                t.execute(
                    "INSERT INTO lepton_detections (device, pipeline, seq, idx, ts, label, score, x0, y0, x1, y1, latency_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT DO NOTHING",
                    rusqlite::params![
                        device, pipeline, seq, i as i64, ts, label, score,
                        b.map(|b| b[0]), b.map(|b| b[1]), b.map(|b| b[2]), b.map(|b| b[3]), latency_ms
                    ],
                )?;
            }
            Ok(true)
        }
        Row::Event { device, pipeline, ts_ms, label, event, score, duration_s } => Ok(t.execute(
            "INSERT INTO lepton_events (device, pipeline, ts, label, event, score, duration_s, consumer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
            rusqlite::params![device, pipeline, rfc3339(*ts_ms), label, event, score, duration_s, consumer],
        )? == 1),
    }
}

/// Inserts one row; false when it was stored already.
fn postgres_row(t: &mut postgres::Transaction<'_>, r: &Row, consumer: &str) -> Result<bool, postgres::Error> {
    match r {
        Row::Detections { device, pipeline, seq, ts_ms, frame, latency_ms, objects } => {
            let ts = *ts_ms as f64 / 1e3;
            let n = t.execute(
                "INSERT INTO lepton_messages (device, pipeline, seq, ts, frame, latency_ms, objects, consumer)
                 VALUES ($1, $2, $3, to_timestamp($4), $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[device, pipeline, seq, &ts, frame, latency_ms, &(objects.len() as i32), &consumer],
            )?;
            if n == 0 {
                return Ok(false);
            }
            for (i, (label, score, b)) in objects.iter().enumerate() {
                t.execute(
                    "INSERT INTO lepton_detections (device, pipeline, seq, idx, ts, label, score, x0, y0, x1, y1, latency_ms)
                     VALUES ($1, $2, $3, $4, to_timestamp($5), $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
                    &[
                        device, pipeline, seq, &(i as i32), &ts, label, score,
                        &b.map(|b| b[0]), &b.map(|b| b[1]), &b.map(|b| b[2]), &b.map(|b| b[3]), latency_ms,
                    ],
                )?;
            }
            Ok(true)
        }
        Row::Event { device, pipeline, ts_ms, label, event, score, duration_s } => Ok(t.execute(
            "INSERT INTO lepton_events (device, pipeline, ts, label, event, score, duration_s, consumer)
             VALUES ($1, $2, to_timestamp($3), $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[device, pipeline, &(*ts_ms as f64 / 1e3), label, event, score, duration_s, &consumer],
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
            a.add(Row::from_message(&detections(seq)).unwrap());
        }
        a.commit().unwrap();
        // A redelivery of seq 1 to another consumer of the group, and a new one.
        b.add(Row::from_message(&detections(1)).unwrap());
        b.add(Row::from_message(&detections(3)).unwrap());
        let ev = describe(
            "lepton/cam1/front/events",
            br#"{"ts":"2026-11-30T10:00:01Z","label":"3","event":"start","score":0.9}"#,
            "lepton",
        );
        b.add(Row::from_message(&ev).unwrap());
        let copy = describe(
            "lepton/cam1/front/events/3",
            br#"{"ts":"2026-11-30T10:00:01Z","label":"3","event":"start","score":0.9}"#,
            "lepton",
        );
        assert_eq!(Row::from_message(&copy), None, "the per-label copy is not stored twice");
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
                    s.add(Row::from_message(&detections(i)).unwrap());
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
        assert_eq!(Row::from_message(&status), None);
        let e = Store::open("mysql://x", "a").err().unwrap().to_string();
        assert!(e.contains("--store mysql://x") && e.contains("sqlite:FILE"), "{e}");
        assert_eq!(redact("postgres://lep:secret@127.0.0.1:5432/db"), "postgres://lep:***@127.0.0.1:5432/db");
        let e = Store::open("sqlite:/nonexistent-dir/x.db", "a").err().unwrap().to_string();
        assert!(e.contains("--store sqlite:/nonexistent-dir/x.db"), "{e}");
    }
}
