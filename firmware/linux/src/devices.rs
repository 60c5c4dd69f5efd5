//! `lepton devices` and `lepton check`.

use crate::config::{Config, Source};
use crate::run::{load_model, Setup};
use anyhow::{bail, Result};
use lepton_runtime::manifest::Task;
use std::path::Path;
use std::process::ExitCode;

/// Lists cameras and microphones.
pub fn run() -> Result<ExitCode> {
    match lepton_runtime::source::camera::list() {
        Ok(cams) if cams.is_empty() => println!("cameras: none found"),
        Ok(cams) => {
            println!("cameras:");
            for c in cams {
                println!("  {}: {}", c.index, c.name);
                for (w, h, fps, f) in c.modes {
                    println!("      {w}x{h} {fps} fps {f}");
                }
            }
        }
        Err(e) => println!("cameras: cannot list ({e})"),
    }
    match lepton_runtime::source::mic::list() {
        Ok(mics) if mics.is_empty() => println!("microphones: none found"),
        Ok(mics) => {
            println!("microphones:");
            for m in mics {
                println!("  {}", m.name);
                for (ch, lo, hi, f) in m.configs {
                    println!("      {ch} channel(s), {lo}..{hi} Hz, {f}");
                }
            }
        }
        Err(e) => println!("microphones: cannot list ({e})"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Validates a config: keys, files, models, manifests and that each source suits its model.
pub fn check(path: &Path, board: Option<&str>) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let broker = match &config.mqtt {
        Some(m) => format!("{}:{}", m.host, m.port()),
        None => "embedded broker".into(),
    };
    println!("{}: device `{}`, MQTT {broker}", path.display(), config.device.id);
    let setup = Setup::from_config(config.clone(), board)?;
    if let Some(b) = &setup.board {
        println!("  board {}: {} ({})", b.name, b.description, b.target);
    }
    for (plan, p) in setup.plans.iter().zip(&config.pipelines) {
        let model =
            load_model(plan).map_err(|e| anyhow::anyhow!("{}: pipeline `{}`: {e:#}", path.display(), p.name))?;
        let Some(m) = model.manifest() else {
            bail!(
                "{}: pipeline `{}`: {} has no manifest (embed one with lepton-convert pack)",
                path.display(),
                p.name,
                p.model.display()
            );
        };
        let audio = matches!(m.task, Task::Keyword | Task::Vad);
        let source_audio = matches!(p.source, Source::Wav { .. } | Source::Mic { .. });
        if m.task == Task::Raw || audio != source_audio {
            bail!(
                "{}: pipeline `{}`: a {:?} model cannot take a {} source",
                path.display(),
                p.name,
                m.task,
                source_kind(&p.source)
            );
        }
        let lines = crate::alert::check(&p.name, &p.alerts, setup.board.as_ref(), &m.labels)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
        for ((chip, line), a) in lines.iter().zip(&p.alerts) {
            let labels = if a.labels.is_empty() { "any label".to_string() } else { a.labels.join(", ") };
            println!("  pipeline `{}`: alert on {chip} line {line} for {labels}, {} s — ok", p.name, a.hold_s);
        }
        println!(
            "  pipeline `{}`: {:?} model {} ({} labels, {} engine), {} source — ok",
            p.name,
            m.task,
            p.model.display(),
            m.labels.len(),
            model.engine_name(),
            source_kind(&p.source)
        );
    }
    let budget = crate::run::check_memory_budget(setup.board.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    if let Some(line) = budget {
        println!("  {line} — ok");
    }
    println!("config ok");
    Ok(ExitCode::SUCCESS)
}

fn source_kind(s: &Source) -> &'static str {
    match s {
        Source::Images { .. } => "images",
        Source::Wav { .. } => "wav",
        Source::Camera { .. } => "camera",
        Source::Mic { .. } => "mic",
    }
}
