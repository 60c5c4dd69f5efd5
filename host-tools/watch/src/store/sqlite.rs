//! The SQLite store: opening a file (shared by several consumers), giving a store from before
//! runs its `run` column, and inserting a row.

use super::row::Row;
use super::{StoreError, INDEX, SCHEMA};
use std::time::{Duration, Instant};

pub(super) fn open_sqlite(file: &str) -> Result<rusqlite::Connection, StoreError> {
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

/// RFC 3339 with milliseconds, as SQLite keeps times (text that sorts in time order).
fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// Inserts one row; false when it was stored already.
pub(super) fn sqlite_row(t: &rusqlite::Connection, r: &Row, consumer: &str) -> rusqlite::Result<bool> {
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

/// A row's values refused (a constraint, a type, a size), not a failure of the database.
pub(super) fn sqlite_data_error(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            rusqlite::ErrorCode::ConstraintViolation | rusqlite::ErrorCode::TypeMismatch | rusqlite::ErrorCode::TooBig
        ),
        rusqlite::Error::ToSqlConversionFailure(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{detections, row};
    use super::super::Store;
    use super::*;
    use crate::describe;

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
}
