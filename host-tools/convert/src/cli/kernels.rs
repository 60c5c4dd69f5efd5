//! `lepton-convert kernels`.

use anyhow::Result;
use clap::Args;
use lepton_runtime::engine::micro::kernels::{Isa, KERNELS_ENV};

/// List the micro engine's int8 kernel sets and which of them this CPU runs.
///
/// Int8 models run on the micro engine with the best kernel set the CPU supports, picked once
/// when a model loads. `LEPTON_KERNELS=<set>` forces one (a set the CPU lacks is an error); the
/// `reference` set is the portable one every other set is held to, bit for bit.
///
/// Example: LEPTON_KERNELS=reference lepton-convert bench model.int8.onnx
#[derive(Args, Debug)]
pub struct KernelsArgs {
    /// Print only the name of the set in use (for scripts).
    #[arg(long)]
    best: bool,
}

/// Runs `kernels`.
pub fn run(args: KernelsArgs) -> Result<u8> {
    let selected = Isa::selected()?;
    if args.best {
        println!("{selected}");
        return Ok(0);
    }
    for isa in Isa::ALL {
        let needs = if isa.requires().is_empty() { "any CPU".to_string() } else { isa.requires().to_string() };
        let state = match (isa == selected, isa.supported()) {
            (true, _) => "in use",
            (false, true) => "available",
            (false, false) => "not on this CPU",
        };
        println!("{:<12} {state:<16} needs {needs}", isa.name());
    }
    if std::env::var(KERNELS_ENV).is_ok_and(|v| !v.is_empty()) {
        println!("({KERNELS_ENV} chooses the set in use)");
    }
    Ok(0)
}
