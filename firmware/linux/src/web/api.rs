//! The JSON API behind the page (`/api/…`: status, pipelines, events and their pictures, the live
//! pictures) and `/healthz`.

use super::history::Query;
use super::State;
use crate::status::rfc3339;
use anyhow::Result;
use axum::extract::{Path as UrlPath, Query as UrlQuery, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

fn json_error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": msg.into()}))).into_response()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| anyhow::anyhow!("{e}"))?
}

pub(super) async fn status(AxState(st): AxState<Arc<State>>) -> Response {
    let s = Arc::clone(&st);
    let (summary, labels) = match blocking(move || Ok((s.history.summary()?, s.history.labels()?))).await {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let l = st.link.stats();
    let mut all_labels: Vec<String> = labels;
    for p in &st.pipelines {
        all_labels.extend(p.manifest.event_labels().into_iter().map(str::to_string));
    }
    all_labels.sort();
    all_labels.dedup();
    let d = &st.device;
    Json(json!({
        "device": d.id, "name": d.name, "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": st.started.elapsed().as_secs(), "time": rfc3339(crate::status::now_ms()),
        "board": d.board.as_ref().map(|(n, desc)| json!({"name": n, "description": desc})),
        "kernels": lepton_runtime::engine::micro::kernels::Isa::selected().map_or_else(|e| e.to_string(), |i| i.name().to_string()),
        "mqtt": {"broker": d.broker, "topics": d.topics, "connected": l.connected, "queue_depth": l.queue_depth,
                 "delivered": l.delivered, "dropped": l.dropped, "connections": l.connections},
        "history": summary,
        "auth": st.access.token.is_some(),
        "pipelines": st.pipelines.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "labels": all_labels,
    }))
    .into_response()
}

fn detections_json(labels: &[String], dets: &[lepton_runtime::Detection]) -> Vec<Value> {
    dets.iter()
        .map(|d| {
            let label = labels.get(d.class as usize).cloned().unwrap_or_else(|| d.class.to_string());
            match d.bbox {
                Some(b) => json!({"label": label, "score": d.score, "box": [b.x0, b.y0, b.x1, b.y1]}),
                None => json!({"label": label, "score": d.score}),
            }
        })
        .collect()
}

pub(super) async fn pipelines(AxState(st): AxState<Arc<State>>) -> Json<Value> {
    let series = st.series.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let list: Vec<Value> = st
        .pipelines
        .iter()
        .zip(series)
        .map(|(p, series)| {
            let labels = &p.manifest.labels;
            let (latest, seen) = {
                let l = p.last.lock().unwrap_or_else(|p| p.into_inner());
                let latest = l.frame.map(|(frame, ts)| {
                    json!({"frame": frame, "ts": rfc3339(ts), "detections": detections_json(labels, &l.detections)})
                });
                let seen = l.seen.as_ref().map(|(ts, d)| json!({"ts": rfc3339(*ts), "detections": detections_json(labels, d)}));
                (latest, seen)
            };
            let mut s = p.status.lock().unwrap_or_else(|p| p.into_inner());
            let mut v = json!({
                "name": p.name, "task": p.manifest.task.name(), "model": p.model, "engine": p.engine, "kernels": p.kernels,
                "source": p.source, "threshold": p.threshold, "labels": labels, "manifest": p.manifest,
                "processed": s.processed, "inferred": s.inferred, "dropped": s.dropped, "failed": s.failed, "published": s.messages,
                "snapshots": s.snapshots, "snapshots_dropped": s.snapshots_dropped,
                "history": s.history, "history_dropped": s.history_dropped,
                "fps": series.back().map_or(0.0, |p| p.fps),
                "inference_p50_ms": s.inference.percentile(50.0).as_secs_f64() * 1e3,
                "inference_p99_ms": s.inference.percentile(99.0).as_secs_f64() * 1e3,
                "finished": s.finished, "stalled": s.stalled,
                "live": p.live.is_some().then(|| format!("/api/snapshot/{}.jpg", p.name)),
                "latest": latest, "last_seen": seen,
                "series": series.iter().map(|q| json!([q.t_ms, (q.fps * 100.0).round() / 100.0, (q.latency_ms * 1000.0).round() / 1000.0])).collect::<Vec<_>>(),
            });
            for (k, n) in s.clip_counters() {
                v[k] = json!(n);
            }
            if let Some(h) = &s.source {
                v["source_connected"] = json!(!h.down());
                v["source_outages"] = json!(h.outages());
            }
            v
        })
        .collect();
    Json(Value::Array(list))
}

/// A time given as RFC 3339 (`2026-11-30T12:00:00Z`) or milliseconds since the Unix epoch.
fn parse_time(name: &str, v: &str) -> Result<u64, String> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| format!("{name}={v}: give a time as RFC 3339 (2026-11-30T12:00:00Z) or milliseconds since 1970"))
}

pub(super) async fn events(
    AxState(st): AxState<Arc<State>>,
    UrlQuery(q): UrlQuery<HashMap<String, String>>,
) -> Response {
    for k in q.keys() {
        if !["since", "until", "label", "pipeline", "limit", "before"].contains(&k.as_str()) {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("unknown parameter `{k}`: use since, until, label, pipeline, limit, before"),
            );
        }
    }
    let time = |k: &str| q.get(k).filter(|v| !v.is_empty()).map(|v| parse_time(k, v)).transpose();
    let number = |k: &str, max: i64| {
        q.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| format!("{k}={v}: give a whole number from 1 to {max}"))
            })
            .transpose()
    };
    let text = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let query = match (time("since"), time("until"), number("limit", 1000), number("before", i64::MAX)) {
        (Ok(since_ms), Ok(until_ms), Ok(limit), Ok(before_id)) => Query {
            since_ms,
            until_ms,
            label: text("label"),
            pipeline: text("pipeline"),
            before_id,
            limit: limit.unwrap_or(100) as usize,
        },
        (Err(msg), ..) | (_, Err(msg), ..) | (_, _, Err(msg), _) | (.., Err(msg)) => {
            return json_error(StatusCode::BAD_REQUEST, msg)
        }
    };
    let h = Arc::clone(&st.history);
    match blocking(move || h.events(&query)).await {
        Ok(rows) => {
            let list: Vec<Value> = rows
                .into_iter()
                .map(|r| {
                    let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
                    v["ts"] = json!(rfc3339(r.ts_ms.max(0) as u64));
                    v["snapshot"] = json!(r.picture.map(|_| format!("/api/events/{}/snapshot.jpg", r.id)));
                    v["clip_url"] = json!(r.clip.as_ref().map(|_| format!("/api/events/{}/clip.mp4", r.id)));
                    v
                })
                .collect();
            Json(json!({"events": list})).into_response()
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

fn jpeg(bytes: Vec<u8>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (headers, bytes).into_response()
}

pub(super) async fn event_picture(AxState(st): AxState<Arc<State>>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return json_error(StatusCode::BAD_REQUEST, format!("event id `{id}`: give a number"));
    };
    let h = Arc::clone(&st.history);
    match blocking(move || h.picture_of(id)).await {
        Ok(Some(b)) => jpeg(b),
        Ok(None) => json_error(StatusCode::NOT_FOUND, format!("event {id} has no snapshot (or is not in the history)")),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// `/api/events/{id}/clip.mp4`: the event's clip from its pipeline's clips folder (ranges
/// served, so a `<video>` seeks).
pub(super) async fn event_clip(
    AxState(st): AxState<Arc<State>>,
    UrlPath(id): UrlPath<String>,
    request: axum::extract::Request,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return json_error(StatusCode::BAD_REQUEST, format!("event id `{id}`: give a number"));
    };
    let h = Arc::clone(&st.history);
    let (pipeline, file) = match blocking(move || h.clip_of(id)).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return json_error(StatusCode::NOT_FOUND, format!("event {id} has no clip (or is not in the history)"))
        }
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let Some(dir) = st.pipelines.iter().find(|p| p.name == pipeline).and_then(|p| p.clips.as_ref()) else {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("pipeline `{pipeline}` keeps no clips now ([pipeline.clips])"),
        );
    };
    // A name from the database is still only a name: no folder, no hidden file.
    if file.contains(['/', '\\']) || file.starts_with('.') || !file.ends_with(".mp4") {
        return json_error(StatusCode::NOT_FOUND, format!("event {id}: `{file}` is not a clip's name"));
    }
    let path = dir.join(&file);
    if !path.is_file() {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("clip {file} is no longer kept ([pipeline.clips] retain_days and retain_mb delete the oldest)"),
        );
    }
    match tower_http::services::ServeFile::new(path).try_call(request).await {
        Ok(r) => r.map(axum::body::Body::new).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("clip {file}: {e}")),
    }
}

pub(super) async fn live_picture(AxState(st): AxState<Arc<State>>, UrlPath(file): UrlPath<String>) -> Response {
    let Some(name) = file.strip_suffix(".jpg") else {
        return json_error(StatusCode::NOT_FOUND, format!("{file}: ask for /api/snapshot/PIPELINE.jpg"));
    };
    let Some(k) = st.pipelines.iter().position(|p| p.name == name) else {
        let names: Vec<&str> = st.pipelines.iter().map(|p| p.name.as_str()).collect();
        return json_error(StatusCode::NOT_FOUND, format!("no pipeline `{name}` (pipelines: {})", names.join(", ")));
    };
    if st.pipelines[k].live.is_none() {
        return json_error(StatusCode::NOT_FOUND, format!("pipeline `{name}` hears audio: it has no pictures"));
    }
    let s = Arc::clone(&st);
    match blocking(move || Ok(s.pipelines[k].live.as_ref().and_then(|l| l.jpeg()))).await {
        Ok(Some(b)) => jpeg(b.to_vec()),
        Ok(None) => json_error(StatusCode::NOT_FOUND, format!("pipeline `{name}` has not processed a frame yet")),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

pub(super) async fn healthz(AxState(st): AxState<Arc<State>>) -> Response {
    let stalled: Vec<&str> = st
        .pipelines
        .iter()
        .filter(|p| p.status.lock().unwrap_or_else(|p| p.into_inner()).stalled)
        .map(|p| p.name.as_str())
        .collect();
    if stalled.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "stalled", "pipelines": stalled}))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_milliseconds() {
        assert_eq!(parse_time("since", "1700000000000").ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("since", "2023-11-14T22:13:20Z").ok(), Some(1_700_000_000_000));
        assert!(parse_time("since", "yesterday").is_err());
    }
}
