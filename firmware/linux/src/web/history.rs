//! The event history: every start and end event of every pipeline, with the snapshot of the frame
//! a vision event started on, in an SQLite database on the device (WAL, so the page reads while
//! the pipelines write). Sinks hand records to one writer thread through a bounded queue (a full
//! queue is counted, never waited on); old events are deleted by age and by the file's size.

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Records waiting for the writer before new ones are counted as dropped.
const QUEUE: usize = 4096;

/// One event to keep.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it happened, ms since the Unix epoch.
    pub ts_ms: u64,
    /// Pipeline name.
    pub pipeline: String,
    /// Label.
    pub label: String,
    /// `start` or `end`.
    pub kind: &'static str,
    /// Score (an end's is the peak of its presence).
    pub score: f32,
    /// An end's duration in seconds.
    pub duration_s: Option<f64>,
    /// The JPEG of the frame a vision event started on; events of one frame share one `Arc`
    /// and are stored with one picture row.
    pub picture: Option<Arc<Vec<u8>>>,
    /// The zone of an `enter` or `leave` (`[[pipeline.zone]]`); `None` for presence events.
    pub zone: Option<String>,
    /// A `clip` event's file in the pipeline's clips folder (`[pipeline.clips]`).
    pub clip: Option<String>,
}

/// One stored event, as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Row id (increasing).
    pub id: i64,
    /// When it happened, ms since the Unix epoch.
    pub ts_ms: i64,
    /// Pipeline name.
    pub pipeline: String,
    /// Label.
    pub label: String,
    /// `start` or `end`.
    pub event: String,
    /// Score.
    pub score: f64,
    /// An end's duration in seconds.
    pub duration_s: Option<f64>,
    /// Id of the event's snapshot (`/api/events/{id}/snapshot.jpg` serves it), if it has one.
    pub picture: Option<i64>,
    /// The zone of an `enter` or `leave`.
    pub zone: Option<String>,
    /// A `clip` event's file (`/api/events/{id}/clip.mp4` serves it).
    pub clip: Option<String>,
}

/// Which events to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// At or after, ms since the Unix epoch.
    pub since_ms: Option<u64>,
    /// Before, ms since the Unix epoch.
    pub until_ms: Option<u64>,
    /// Only this label.
    pub label: Option<String>,
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only rows with an id below this (paging).
    pub before_id: Option<i64>,
    /// At most this many (1..=1000).
    pub limit: usize,
}

/// How much history to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Events older than this are deleted.
    pub max_age: Duration,
    /// The database is kept under this many bytes, oldest events deleted first.
    pub max_bytes: u64,
}

/// What the history holds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Events stored.
    pub events: i64,
    /// Pictures stored.
    pub pictures: i64,
    /// Size of the database in bytes (pages in use).
    pub bytes: i64,
    /// The database file.
    pub path: String,
}

/// The history: a reading connection for the page and the writer thread's queue.
pub struct History {
    path: PathBuf,
    reader: Mutex<Connection>,
    tx: Mutex<Option<SyncSender<Record>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The sinks' handle: records go to the writer's queue.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Record>,
}

impl Writer {
    /// Queues a record; `false` when the queue is full or the writer has stopped (the caller
    /// counts it).
    pub fn send(&self, r: Record) -> bool {
        match self.tx.try_send(r) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let c = Connection::open(path).with_context(|| format!("opening the event history {}", path.display()))?;
    c.busy_timeout(Duration::from_secs(5))?;
    Ok(c)
}

impl History {
    /// Opens (creating when new) the database at `path` and starts its writer thread.
    pub fn open(path: &Path, retention: Retention) -> Result<Arc<History>> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let c = open_connection(path)?;
        let at = || format!("the event history {}", path.display());
        // Incremental vacuum must be chosen before the first table exists; it lets retention hand
        // freed pages back to the file system.
        c.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS pictures (id INTEGER PRIMARY KEY, jpeg BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS events (
                 id INTEGER PRIMARY KEY,
                 ts_ms INTEGER NOT NULL,
                 pipeline TEXT NOT NULL,
                 label TEXT NOT NULL,
                 event TEXT NOT NULL,
                 score REAL NOT NULL,
                 duration_s REAL,
                 picture INTEGER REFERENCES pictures(id)
             );
             CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ms);
             CREATE INDEX IF NOT EXISTS events_label ON events(label, ts_ms);
             CREATE INDEX IF NOT EXISTS events_picture ON events(picture);",
        )
        .with_context(at)?;
        // Histories made before zones and clips lack their columns.
        for column in ["zone", "clip"] {
            let has = c
                .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = ?1")
                .and_then(|mut st| st.exists([column]))
                .with_context(at)?;
            if !has {
                c.execute_batch(&format!("ALTER TABLE events ADD COLUMN {column} TEXT")).with_context(at)?;
            }
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let writer_conn = open_connection(path)?;
        if let Err(e) = prune(&writer_conn, retention) {
            tracing::warn!("event history {}: retention: {e}", path.display());
        }
        let writer = std::thread::Builder::new()
            .name("lepton-history".into())
            .spawn(move || write_loop(writer_conn, rx, retention))
            .context("starting the history writer")?;
        Ok(Arc::new(History {
            path: path.to_path_buf(),
            reader: Mutex::new(c),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// A handle for a sink.
    pub fn writer(&self) -> Option<Writer> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone().map(|tx| Writer { tx })
    }

    /// Writes what is queued and stops the writer (sinks' handles must be gone first).
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let c = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        f(&c).with_context(|| format!("reading the event history {}", self.path.display()))
    }

    /// Events matching `q`, newest first.
    pub fn events(&self, q: &Query) -> Result<Vec<Row>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, ts_ms, pipeline, label, event, score, duration_s, picture, zone, clip FROM events
                 WHERE (?1 IS NULL OR ts_ms >= ?1) AND (?2 IS NULL OR ts_ms < ?2)
                   AND (?3 IS NULL OR label = ?3) AND (?4 IS NULL OR pipeline = ?4)
                   AND (?5 IS NULL OR id < ?5)
                 ORDER BY id DESC LIMIT ?6",
            )?;
            let rows = st.query_map(
                params![
                    q.since_ms.map(|v| v as i64),
                    q.until_ms.map(|v| v as i64),
                    q.label,
                    q.pipeline,
                    q.before_id,
                    q.limit.clamp(1, 1000) as i64
                ],
                |r| {
                    Ok(Row {
                        id: r.get(0)?,
                        ts_ms: r.get(1)?,
                        pipeline: r.get(2)?,
                        label: r.get(3)?,
                        event: r.get(4)?,
                        score: r.get(5)?,
                        duration_s: r.get(6)?,
                        picture: r.get(7)?,
                        zone: r.get(8)?,
                        clip: r.get(9)?,
                    })
                },
            )?;
            rows.collect()
        })
    }

    /// The snapshot of event `id`, if it has one.
    pub fn picture_of(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.read(|c| {
            c.query_row("SELECT p.jpeg FROM events e JOIN pictures p ON p.id = e.picture WHERE e.id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// The pipeline and clip file of event `id`, if it has a clip.
    pub fn clip_of(&self, id: i64) -> Result<Option<(String, String)>> {
        self.read(|c| {
            c.query_row("SELECT pipeline, clip FROM events WHERE id = ?1 AND clip IS NOT NULL", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
    }

    /// The labels that occur in the history, sorted.
    pub fn labels(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT DISTINCT label FROM events ORDER BY label")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Counts and size.
    pub fn summary(&self) -> Result<Summary> {
        let (events, pictures, bytes) = self.read(|c| {
            let events = c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
            let pictures = c.query_row("SELECT count(*) FROM pictures", [], |r| r.get(0))?;
            Ok((events, pictures, used_bytes(c)?))
        })?;
        Ok(Summary { events, pictures, bytes, path: self.path.display().to_string() })
    }
}

/// Bytes of the pages in use.
fn used_bytes(c: &Connection) -> rusqlite::Result<i64> {
    let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok((pages - free) * size)
}

fn write_loop(mut c: Connection, rx: Receiver<Record>, retention: Retention) {
    let mut last_picture: Option<(Arc<Vec<u8>>, i64)> = None;
    let mut pruned = Instant::now();
    let mut since_prune = 0usize;
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if let Some(first) = first {
            // One transaction for what has queued up.
            let mut batch = vec![first];
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            since_prune += batch.len();
            if let Err(e) = insert(&mut c, &batch, &mut last_picture) {
                tracing::warn!("event history: {} events not written: {e}", batch.len());
            }
        }
        if since_prune >= 1000 || pruned.elapsed() >= Duration::from_secs(60) {
            if let Err(e) = prune(&c, retention) {
                tracing::warn!("event history: retention: {e}");
            }
            pruned = Instant::now();
            since_prune = 0;
        }
    }
}

fn insert(c: &mut Connection, batch: &[Record], last: &mut Option<(Arc<Vec<u8>>, i64)>) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    for r in batch {
        let picture = match &r.picture {
            Some(p) => match last {
                Some((q, id)) if Arc::ptr_eq(p, q) => Some(*id),
                _ => {
                    tx.execute("INSERT INTO pictures (jpeg) VALUES (?1)", [p.as_slice()])?;
                    let id = tx.last_insert_rowid();
                    *last = Some((Arc::clone(p), id));
                    Some(id)
                }
            },
            None => None,
        };
        tx.execute(
            "INSERT INTO events (ts_ms, pipeline, label, event, score, duration_s, picture, zone, clip) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![r.ts_ms as i64, r.pipeline, r.label, r.kind, f64::from(r.score), r.duration_s, picture, r.zone, r.clip],
        )?;
    }
    tx.commit()
}

/// Deletes events past the age limit, then the oldest tenth until the size is under the limit,
/// and the pictures no event refers to any more.
fn prune(c: &Connection, r: Retention) -> rusqlite::Result<()> {
    let cutoff = crate::status::now_ms().saturating_sub(r.max_age.as_millis() as u64) as i64;
    let mut deleted = c.execute("DELETE FROM events WHERE ts_ms < ?1", [cutoff])?;
    deleted += orphans(c)?;
    while used_bytes(c)? as u64 > r.max_bytes {
        let n = c.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT max(1, (SELECT count(*) FROM events) / 10))",
            [],
        )?;
        let p = orphans(c)?;
        if n + p == 0 {
            break;
        }
        deleted += n;
    }
    if deleted > 0 {
        c.execute_batch("PRAGMA incremental_vacuum;")?;
        tracing::info!("event history: {deleted} old events deleted (retention)");
    }
    Ok(())
}

fn orphans(c: &Connection) -> rusqlite::Result<usize> {
    c.execute("DELETE FROM pictures WHERE id NOT IN (SELECT picture FROM events WHERE picture IS NOT NULL)", [])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts_ms: u64, label: &str, picture: Option<Arc<Vec<u8>>>) -> Record {
        Record {
            ts_ms,
            pipeline: "cam".into(),
            label: label.into(),
            kind: "start",
            score: 0.9,
            duration_s: None,
            picture,
            zone: None,
            clip: None,
        }
    }

    #[test]
    fn a_history_from_before_zones_gains_their_column_and_keeps_its_events() {
        let dir = std::env::temp_dir().join(format!("lepton-history-zone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        let _ = std::fs::remove_file(&path);
        // The table as versions before zones made it, with one event.
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE pictures (id INTEGER PRIMARY KEY, jpeg BLOB NOT NULL);
             CREATE TABLE events (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, pipeline TEXT NOT NULL,
                 label TEXT NOT NULL, event TEXT NOT NULL, score REAL NOT NULL, duration_s REAL,
                 picture INTEGER REFERENCES pictures(id));
             INSERT INTO events (ts_ms, pipeline, label, event, score) VALUES (1000, 'cam', 'car', 'start', 0.9);",
        )
        .unwrap();
        drop(c);
        let h = History::open(&path, Retention { max_age: Duration::from_secs(1 << 40), max_bytes: 1 << 30 }).unwrap();
        let mut enter = record(2000, "car", None);
        (enter.kind, enter.zone) = ("enter", Some("driveway".into()));
        assert!(h.writer().unwrap().send(enter));
        h.close();
        let rows = h.events(&Query { limit: 10, ..Query::default() }).unwrap();
        let got: Vec<(&str, Option<&str>)> = rows.iter().map(|r| (r.event.as_str(), r.zone.as_deref())).collect();
        assert_eq!(got, [("enter", Some("driveway")), ("start", None)]);
        // Opening again finds the column and adds nothing.
        drop(h);
        assert!(History::open(&path, Retention { max_age: Duration::from_secs(1 << 40), max_bytes: 1 << 30 }).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn wait_for(h: &History, n: i64) {
        for _ in 0..200 {
            if h.summary().unwrap().events >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the writer did not store {n} events");
    }

    #[test]
    fn stores_filters_shares_pictures_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("lepton-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("h.db");
        let keep = Retention { max_age: Duration::from_secs(86_400), max_bytes: 100 << 20 };
        let now = crate::status::now_ms();
        let h = History::open(&path, keep).unwrap();
        let w = h.writer().unwrap();
        let pic = Arc::new(vec![0xFF, 0xD8, 1, 2, 3]);
        assert!(w.send(record(now, "cat", Some(Arc::clone(&pic)))));
        assert!(w.send(record(now, "dog", Some(pic))));
        assert!(w.send(record(now + 1, "cat", None)));
        drop(w);
        h.close();
        let s = h.summary().unwrap();
        assert_eq!((s.events, s.pictures), (3, 1), "one picture row for the two events of one frame");
        let h = History::open(&path, keep).unwrap();
        wait_for(&h, 3);
        let cats = h.events(&Query { label: Some("cat".into()), limit: 10, ..Default::default() }).unwrap();
        assert_eq!(cats.len(), 2);
        assert!(cats[0].id > cats[1].id, "newest first");
        assert_eq!(h.picture_of(cats[1].id).unwrap().unwrap(), vec![0xFF, 0xD8, 1, 2, 3]);
        assert_eq!(h.picture_of(cats[0].id).unwrap(), None);
        let later = h.events(&Query { since_ms: Some(now + 1), limit: 10, ..Default::default() }).unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(h.labels().unwrap(), vec!["cat", "dog"]);
        h.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_deletes_old_events_and_keeps_the_size_limit() {
        let dir = std::env::temp_dir().join(format!("lepton-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("h.db");
        let now = crate::status::now_ms();
        let big = Retention { max_age: Duration::from_secs(3600), max_bytes: 1 << 30 };
        let h = History::open(&path, big).unwrap();
        let w = h.writer().unwrap();
        // Two days old: past the hour of the next open.
        w.send(record(now - 2 * 86_400_000, "old", None));
        for i in 0..40 {
            w.send(record(now + i, "new", Some(Arc::new(vec![i as u8; 20_000]))));
        }
        drop(w);
        h.close();
        assert_eq!(h.summary().unwrap().events, 41);
        // Reopened with 300 KB: the old event goes by age, then the oldest pictures by size.
        let small = Retention { max_age: Duration::from_secs(3600), max_bytes: 300_000 };
        let h = History::open(&path, small).unwrap();
        let s = h.summary().unwrap();
        assert!(s.bytes as u64 <= 300_000, "{s:?}");
        assert!(s.events > 0 && s.events < 40, "{s:?}");
        assert_eq!(s.pictures, s.events, "{s:?}");
        assert!(h.events(&Query { label: Some("old".into()), limit: 10, ..Default::default() }).unwrap().is_empty());
        let newest = h.events(&Query { limit: 1, ..Default::default() }).unwrap();
        assert_eq!(newest[0].ts_ms as u64, now + 39, "the newest kept");
        h.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
