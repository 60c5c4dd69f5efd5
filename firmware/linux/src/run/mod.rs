//! `lepton run`: the pipelines of a config (or the bundled demo), an MQTT link (or an embedded
//! broker), stats, Home Assistant discovery, the device page, and a graceful stop on
//! SIGINT/SIGTERM. The stages are in the submodules, in the order a run goes through them:
//! `setup` (what to run), `load` (models checked before anything starts), `link` (the broker),
//! `capture` and `pipeline` (each pipeline's thread), `stats`, `stop` (what a signal calls).

mod capture;
mod link;
mod load;
mod pipeline;
mod setup;
mod stats;
mod stop;

pub use load::{check_memory_budget, check_plan};
pub use setup::{source_name, source_text, Broker, ModelRef, Plan, Setup, SourceRef, WebSetup};

use crate::alert;
use crate::broker;
use crate::config::{self, Format};
use crate::console::say;
use crate::homeassistant::{self, PipelineEntities};
use crate::mqtt::Link;
use crate::sink::{DaemonSink, EventClips, SinkOptions, Zoned};
use crate::snapshot::Snapshotter;
use crate::topics::Topics;
use crate::watchdog;
use crate::web::{self, history, live};
use anyhow::{Context, Result};
use lepton_runtime::source::clips::{ClipOptions, Clips};
use lepton_runtime::source::retain::FrameRing;
use link::link_options;
use load::{model_label, model_name};
use pipeline::run_pipeline;
use stats::stats_loop;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stop::Stoppers;

/// Exit code of a run that ended but could not deliver everything it produced (the broker was
/// unreachable at the end, or the offline queue overflowed).
pub const EXIT_UNDELIVERED: u8 = 1;

/// Runs everything until the pipelines end or a signal stops them. Every check that can fail
/// before capturing (models, manifests, sources, alert lines, board) runs first: a config that
/// cannot run exits 2 before the device announces itself online.
pub fn run(setup: Setup) -> Result<ExitCode> {
    setup.apply_board();
    let mut loaded = vec![];
    for plan in setup.plans {
        let checked = check_plan(plan, setup.board.as_ref(), &setup.trust)?;
        let (engine, kernels) = checked.model.engine_name();
        tracing::info!(
            "pipeline {}: {} on {engine}{}",
            checked.plan.name,
            model_label(&checked.plan),
            kernels.map_or(String::new(), |k| format!(" ({k} kernels)"))
        );
        let alerts =
            alert::start(&checked.plan.name, &checked.plan.alerts, setup.board.as_ref(), &checked.manifest.labels)?;
        for a in &alerts {
            tracing::info!("pipeline {}: alert output on {}", checked.plan.name, a.name);
        }
        loaded.push((checked, alerts));
    }
    match check_memory_budget(setup.board.as_ref()) {
        Ok(Some(line)) => tracing::info!("{line}"),
        Ok(None) => {}
        Err(e) => tracing::warn!("{e:#}"),
    }
    let (mqtt, embedded) = match setup.broker {
        Broker::External(m) => (*m, false),
        Broker::Embedded => {
            let port = broker::start()?;
            say!("embedded MQTT broker on 127.0.0.1:{port} (watch with: lepton-watch --port {port})");
            let m: config::Mqtt =
                toml::from_str(&format!("host = \"127.0.0.1\"\nport = {port}")).context("embedded broker settings")?;
            (m, true)
        }
    };
    let topics = Topics::new(&mqtt.topic_prefix, &setup.device);
    // The device page's address and history are taken before anything is published, so that a
    // port in use or an unwritable database is an error at start.
    let web = match &setup.web {
        Some(w) => {
            let listener = web::bind(w.listen, w.search)?;
            let history = history::History::open(&w.database, w.retention)?;
            Some((listener, history))
        }
        None => None,
    };
    let link = Link::start(link_options(&setup.device, &mqtt, &topics)?)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let stoppers: Stoppers = Arc::new(Mutex::new(vec![]));
    {
        let (stopping, stoppers) = (Arc::clone(&stopping), Arc::clone(&stoppers));
        ctrlc::set_handler(move || {
            if stopping.swap(true, Ordering::Relaxed) {
                eprintln!("second signal: exiting now");
                std::process::exit(130);
            }
            eprintln!("stopping: finishing the current frames and delivering queued messages…");
            for s in stoppers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                s();
            }
        })
        .context("installing the signal handler")?;
    }
    if setup.homeassistant.discovery {
        let entities: Vec<PipelineEntities> = loaded
            .iter()
            .map(|(c, _)| PipelineEntities {
                name: c.plan.name.clone(),
                labels: c.manifest.event_labels().into_iter().map(str::to_string).collect(),
                snapshot: c.plan.snapshot.is_some(),
                task: c.manifest.task,
                zones: zoned(&c.plan, &c.manifest)
                    .into_iter()
                    .map(|z| (z.name, z.counts.into_iter().map(|(l, _)| l).collect()))
                    .collect(),
            })
            .collect();
        // The device page's link: the address it is bound to (the port found, for the demo).
        let page = web.as_ref().and_then(|(l, _)| l.local_addr().ok()).map(homeassistant::page_url);
        let ha = &setup.homeassistant.prefix;
        let configs =
            homeassistant::configs(ha, &setup.device, &setup.device_name, &topics, &entities, page.as_deref());
        homeassistant::announce(&link, ha, &setup.device, configs);
    }
    let mut statuses = vec![];
    let mut watched = vec![];
    let mut threads = vec![];
    let mut pages = vec![];
    for (checked, alerts) in loaded {
        let plan = &checked.plan;
        let vision = checked.manifest.task.is_vision();
        // Frames are kept for snapshots and for the page's live view.
        let ring = (plan.snapshot.is_some() || (web.is_some() && vision)).then(FrameRing::default);
        // With the page on, every vision event start gets a picture in the history; it goes out on
        // MQTT only with [pipeline.snapshot].
        let history_only = config::Snapshot { on: None, every_s: None, annotate: true, quality: 80, max_width: 640 };
        let snapshot_config = plan.snapshot.as_ref().or((web.is_some() && vision).then_some(&history_only));
        let last = live::SharedLast::default();
        let clips = match &plan.clips {
            Some(c) => Some(EventClips {
                clips: Clips::start(ClipOptions {
                    // A folder per pipeline: budgets and clean-ups never touch another's files.
                    dir: c.dir.join(&plan.name),
                    pipeline: plan.name.clone(),
                    pre: c.pre_s.duration(),
                    post: c.post_s.duration(),
                    max: c.max_s.duration(),
                    retain_age: c.retain_days.duration(),
                    retain_bytes: c.retain_mb.saturating_mul(1 << 20),
                })
                .with_context(|| format!("pipeline `{}`: [pipeline.clips]", plan.name))?,
                per_object: checked.manifest.task == lepton_runtime::manifest::Task::Detect && plan.track.enabled,
            }),
            None => None,
        };
        let clip_dir = plan.clips.as_ref().map(|c| c.dir.join(&plan.name));
        let (sink, status) = DaemonSink::new(SinkOptions {
            device: setup.device.clone(),
            pipeline: plan.name.clone(),
            model: model_name(plan),
            labels: checked.manifest.labels.clone(),
            threshold: plan.threshold,
            hold: plan.hold,
            print: plan.print,
            format: if embedded { Format::Json } else { mqtt.format },
            link: Some(link.clone()),
            topics: topics.clone(),
            alerts,
            snapshots: snapshot_config.zip(ring.clone()).map(|(c, r)| Snapshotter::new(c, r)),
            publish_snapshots: plan.snapshot.is_some(),
            keyword: checked.manifest.task == lepton_runtime::manifest::Task::Keyword,
            history: web.as_ref().and_then(|(_, h)| h.writer()),
            live: web.as_ref().map(|_| Arc::clone(&last)),
            zones: zoned(plan, &checked.manifest),
            clips,
        });
        if web.is_some() {
            let (engine, kernels) = checked.model.engine_name();
            pages.push(web::PipelineInfo {
                name: plan.name.clone(),
                model: model_label(plan),
                engine: engine.to_string(),
                kernels: kernels.map(|k| k.name().to_string()),
                manifest: checked.manifest.clone(),
                source: source_text(&plan.source),
                threshold: plan.threshold,
                status: Arc::clone(&status),
                clips: clip_dir,
                last: Arc::clone(&last),
                live: ring
                    .clone()
                    .filter(|_| vision)
                    .map(|r| live::Live::new(r, Arc::clone(&last), checked.manifest.labels.clone(), overlay(plan))),
            });
        }
        watched.push((plan.name.clone(), Arc::clone(&status)));
        statuses.push((plan.name.clone(), status));
        let (stoppers, stopping) = (Arc::clone(&stoppers), Arc::clone(&stopping));
        let name = plan.name.clone();
        let board = setup.board.clone();
        let t = std::thread::Builder::new()
            .name(format!("lepton-{name}"))
            .stack_size(8 << 20)
            .spawn(move || run_pipeline(checked, sink, ring, board, stoppers, stopping))
            .with_context(|| format!("starting pipeline `{name}`"))?;
        threads.push((name, t));
    }
    let server = match web {
        Some((listener, history)) => {
            let w = setup.web.as_ref().context("web settings")?;
            let device = web::DeviceInfo {
                id: setup.device.clone(),
                name: setup.device_name.clone(),
                board: setup.board.as_ref().map(|b| (b.name.clone(), b.description.clone())),
                broker: mqtt.brokers_text(),
                topics: format!("{}/{}/", mqtt.topic_prefix, setup.device),
            };
            let access = web::Access { token: w.token.clone(), session: w.session, secure_cookie: w.secure_cookie };
            let state = web::State::new(device, pages, link.clone(), Arc::clone(&history), access);
            let server = web::start(listener, Arc::new(state))?;
            let open = if w.token.is_some() { "token required" } else { "open, no token" };
            say!("device page on http://{} ({open}; event history in {})", server.addr, w.database.display());
            if w.token.is_none() && !server.addr.ip().is_loopback() {
                tracing::warn!(
                    "web.listen {}: the device page is reachable from the network without a token; set [web] token_file",
                    server.addr
                );
            }
            Some((server, history))
        }
        None => None,
    };
    watchdog::ready(threads.len());
    let watchdog_stop = Arc::new(AtomicBool::new(false));
    let watchdog = watchdog::start(watched, setup.stall, Arc::clone(&watchdog_stop));
    let stats_stop = Arc::new(AtomicBool::new(false));
    let stats = (!setup.stats_interval.is_zero()).then(|| {
        let (link, topics, device, stop) =
            (link.clone(), topics.clone(), setup.device.clone(), Arc::clone(&stats_stop));
        let interval = setup.stats_interval;
        std::thread::spawn(move || stats_loop(link, topics, device, statuses, interval, stop))
    });
    let mut failed = false;
    for (name, t) in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("error: pipeline `{name}`: {e:#}");
                failed = true;
            }
            Err(_) => {
                eprintln!("error: pipeline `{name}` panicked");
                failed = true;
            }
        }
    }
    if let Some((server, _)) = &server {
        if !stopping.load(Ordering::Relaxed) {
            say!(
                "the pipelines have ended; the device page stays up on http://{} until Ctrl-C (SIGINT or SIGTERM)",
                server.addr
            );
            while !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    watchdog_stop.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    watchdog::stopping();
    if let Some((server, history)) = server {
        server.stop();
        history.close();
    }
    stats_stop.store(true, Ordering::Relaxed);
    if let Some(t) = stats {
        let _ = t.join();
    }
    let left = link.flush(Duration::from_secs(10));
    let s = link.stats();
    say!("MQTT: {} messages delivered, {} dropped (queue full), {} undelivered at exit", s.delivered, s.dropped, left);
    link.close();
    if failed {
        return Ok(ExitCode::from(2));
    }
    if left > 0 || s.dropped > 0 {
        eprintln!(
            "error: {} of the run's messages never reached the broker at {} ({left} undelivered at exit, {} dropped from a full queue)",
            left as u64 + s.dropped,
            mqtt.brokers_text(),
            s.dropped
        );
        return Ok(ExitCode::from(EXIT_UNDELIVERED));
    }
    Ok(ExitCode::SUCCESS)
}

/// A plan's zones as its sink publishes them: each with the labels it counts, at zero (the
/// zone's own labels, else every label of the model that can produce events).
fn zoned(plan: &Plan, manifest: &lepton_runtime::manifest::Manifest) -> Vec<Zoned> {
    let all: Vec<String> = manifest.event_labels().into_iter().map(str::to_string).collect();
    plan.zones
        .iter()
        .map(|z| Zoned { name: z.name.clone(), counts: z.counted(&all).iter().map(|l| (l.clone(), 0)).collect() })
        .collect()
}

/// What the live view draws under the boxes: the zones (azure, named) and the motion masks (grey).
fn overlay(plan: &Plan) -> Vec<lepton_runtime::draw::Outline> {
    let corners = |points: &[[f32; 2]]| points.iter().map(|&[x, y]| (x, y)).collect();
    let zones = plan.zones.iter().map(|z| lepton_runtime::draw::Outline {
        name: z.name.clone(),
        points: corners(&z.points),
        color: lepton_runtime::draw::ZONE_COLOR,
    });
    let masks = plan.masks.iter().map(|m| lepton_runtime::draw::Outline {
        name: "mask".into(),
        points: corners(&m.points),
        color: [128, 128, 128],
    });
    zones.chain(masks).collect()
}
