//! Classifier mode: the model runs on every embedded input set, and each output of each run is
//! printed as one console line, `output <input index> <output name> <int8 values as stored>`.

use crate::app::{write_name, AppError, Stats};
use core::fmt::Write;
use lepton_core::engine::micro::Interpreter;

/// Runs the model on `runs` input sets laid out back to back in `data` (each set: every model
/// input in model order, int8 as stored) and writes the output lines to `out`. `cycles` reads the
/// board's cycle counter.
pub fn run<const T: usize>(
    out: &mut impl Write,
    model: &Interpreter<'_, T>,
    arena: &mut [u8],
    data: &[u8],
    runs: usize,
    cycles: &dyn Fn() -> u64,
) -> Result<Stats, AppError> {
    let (inputs, outputs) = (model.header().inputs.len(), model.header().outputs.len());
    let mut stats = Stats::default();
    let mut offset = 0;
    for run in 0..runs {
        for i in 0..inputs {
            let dst = model.input_mut(arena, i)?;
            let src = data.get(offset..offset + dst.len()).ok_or(AppError::Inputs)?;
            dst.copy_from_slice(src);
            offset += src.len();
        }
        let start = cycles();
        crate::app::infer(model, arena)?;
        stats.record(cycles().wrapping_sub(start));
        for o in 0..outputs {
            write!(out, "output {run} ")?;
            write_name(out, model.output_desc(o)?.name)?;
            out.write_char(' ')?;
            for (k, &v) in model.output(arena, o)?.iter().enumerate() {
                if k > 0 {
                    out.write_char(',')?;
                }
                write!(out, "{}", v as i8)?;
            }
            out.write_char('\n')?;
        }
    }
    if offset != data.len() {
        return Err(AppError::Inputs);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::{ARENA_BYTES, INPUT_DATA, INPUT_RUNS, MODEL};

    #[test]
    fn every_input_set_gives_one_line_per_output() {
        let model = crate::app::load(MODEL).unwrap();
        let mut arena = vec![0u8; ARENA_BYTES];
        let mut out = String::new();
        let stats = run(&mut out, &model, &mut arena, INPUT_DATA, INPUT_RUNS, &|| 0).unwrap();
        assert_eq!(stats.runs, INPUT_RUNS as u64);
        let outputs = model.header().outputs.len();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), INPUT_RUNS * outputs);
        for (k, line) in lines.iter().enumerate() {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 4, "{line}");
            assert_eq!((f[0], f[1]), ("output", (k / outputs).to_string().as_str()));
            let o = model.output_desc(k % outputs).unwrap();
            assert_eq!(f[2], o.name);
            let values: Vec<i8> = f[3].split(',').map(|v| v.parse().unwrap()).collect();
            assert_eq!(values.len(), o.len());
        }
    }

    #[test]
    fn short_inputs_and_small_arenas_are_errors_not_panics() {
        let model = crate::app::load(MODEL).unwrap();
        let mut arena = vec![0u8; ARENA_BYTES];
        let mut out = String::new();
        let short = &INPUT_DATA[..INPUT_DATA.len() - 1];
        assert_eq!(run(&mut out, &model, &mut arena, short, INPUT_RUNS, &|| 0).unwrap_err(), AppError::Inputs);
        let mut small = vec![0u8; ARENA_BYTES - 1];
        let e = run(&mut out, &model, &mut small, INPUT_DATA, INPUT_RUNS, &|| 0).unwrap_err();
        assert!(matches!(e, AppError::Model(_)), "{e:?}");
    }
}
