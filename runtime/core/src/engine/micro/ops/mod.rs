//! The micro engine's operators: validation against the tensor table, and dispatch to the
//! reference kernels (one module per operator).

pub mod binary;
pub mod conv;
pub mod fully_connected;
pub mod layout;
pub mod lut;
pub mod pool;
pub mod softmax;

use super::format::{Op, TensorDesc};
use core::ops::Range;

/// Checks an op against the tensor table; the error says what is inconsistent.
pub fn validate(op: &Op<'_>, t: &[TensorDesc<'_>]) -> Result<(), &'static str> {
    let any = |id: u16| t.get(id as usize).ok_or("refers to a missing tensor");
    // Only a Concat writes a per-channel quantized tensor (a model output), and no op reads one.
    let get = |id: u16| {
        let d = any(id)?;
        if d.per_channel() {
            return Err("a per-channel quantized tensor is only written by Concat and read by no op");
        }
        Ok(d)
    };
    let disjoint = |a: &TensorDesc<'_>, b: &TensorDesc<'_>| {
        let (x, y) = (a.range(), b.range());
        if x.end <= y.start || y.end <= x.start {
            Ok(())
        } else {
            Err("input and output overlap in the arena")
        }
    };
    match op {
        Op::Conv(c) => {
            let (i, o) = (get(c.input)?, get(c.output)?);
            disjoint(i, o)?;
            conv::validate(c, i, o)
        }
        Op::FullyConnected(f) => {
            let (i, o) = (get(f.input)?, get(f.output)?);
            disjoint(i, o)?;
            fully_connected::validate(f, i, o)
        }
        Op::Add(b) | Op::Mul(b) => {
            let (x, y, o) = (get(b.a)?, get(b.b)?, get(b.output)?);
            disjoint(x, o)?;
            disjoint(y, o)?;
            binary::validate(matches!(op, Op::Mul(_)), b, x, y, o)
        }
        Op::Lut { input, output, table } => {
            let (i, o) = (get(*input)?, get(*output)?);
            disjoint(i, o)?;
            if table.len() != 256 {
                return Err("table must have 256 entries");
            }
            if i.len() != o.len() {
                return Err("input and output sizes differ");
            }
            Ok(())
        }
        Op::MaxPool(p) | Op::AvgPool(p) => {
            let (i, o) = (get(p.input)?, get(p.output)?);
            disjoint(i, o)?;
            pool::validate(p, i, o)
        }
        Op::GlobalAvgPool { input, output, requant } => {
            let (i, o) = (get(*input)?, get(*output)?);
            disjoint(i, o)?;
            pool::validate_global_average(requant, i, o)
        }
        Op::Copy { input, output } => {
            let (i, o) = (get(*input)?, get(*output)?);
            disjoint(i, o)?;
            if i.len() != o.len() {
                return Err("input and output sizes differ");
            }
            Ok(())
        }
        Op::Transpose { input, output, .. } => {
            let (i, o) = (get(*input)?, get(*output)?);
            disjoint(i, o)?;
            if i.shape != o.shape {
                return Err("a layout change keeps the shape");
            }
            Ok(())
        }
        Op::Concat { inputs, output } => {
            let o = any(*output)?;
            if inputs.len() % 2 != 0 || inputs.is_empty() {
                return Err("bad input list");
            }
            let mut channels = 0u32;
            for id in inputs.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])) {
                let i = get(id)?;
                disjoint(i, o)?;
                if i.shape[..3] != o.shape[..3] {
                    return Err("inputs differ from the output outside the channel axis");
                }
                // A copy: each input must be quantized as its channels of the output.
                let first = channels as usize;
                channels = channels.checked_add(i.shape[3]).ok_or("input channels overflow")?;
                if channels > o.shape[3] {
                    return Err("input channels do not add up to the output's");
                }
                if (first..channels as usize).any(|c| o.channel_quant(c) != (i.scale, i.zero_point)) {
                    return Err("an input is quantized differently from its channels of the output");
                }
            }
            if channels != o.shape[3] {
                return Err("input channels do not add up to the output's");
            }
            Ok(())
        }
        Op::Slice { input, output, begin } => {
            let (i, o) = (get(*input)?, get(*output)?);
            disjoint(i, o)?;
            layout::validate_slice(*begin, i, o)
        }
        Op::Const { output, data } => {
            if data.len() != get(*output)?.len() {
                return Err("constant data size differs from the output's");
            }
            Ok(())
        }
        Op::Variable { output, init } => {
            if init.len() != get(*output)?.len() {
                return Err("a variable's initial value differs in size from it");
            }
            Ok(())
        }
        Op::Softmax { input, output, table } => {
            let (i, o) = (get(*input)?, get(*output)?);
            disjoint(i, o)?;
            if table.len() != 1024 || i.shape != o.shape {
                return Err("table must have 256 u32 entries and shapes must match");
            }
            Ok(())
        }
    }
}

/// Splits the arena into read-only input views and the mutable output view (disjoint by the plan,
/// checked by [`validate`]).
pub fn io<'a, const N: usize>(
    arena: &'a mut [u8],
    inputs: [Range<usize>; N],
    output: Range<usize>,
) -> ([&'a [u8]; N], &'a mut [u8]) {
    let (before, rest) = arena.split_at_mut(output.start);
    let (out, after) = rest.split_at_mut(output.end - output.start);
    let (before, after): (&'a [u8], &'a [u8]) = (before, after);
    let base = output.end;
    let views = inputs.map(|r| if r.end <= output.start { &before[r] } else { &after[r.start - base..r.end - base] });
    (views, out)
}

/// Runs one op with the reference kernels.
pub fn run(op: &Op<'_>, t: &[TensorDesc<'_>], arena: &mut [u8]) {
    let d = |id: u16| &t[id as usize];
    match op {
        Op::Conv(c) => {
            let (i, o) = (d(c.input), d(c.output));
            let ([x], y) = io(arena, [i.range()], o.range());
            conv::reference(c, i, x, o, y);
        }
        Op::FullyConnected(f) => {
            let (i, o) = (d(f.input), d(f.output));
            let ([x], y) = io(arena, [i.range()], o.range());
            fully_connected::reference(f, i, x, o, y);
        }
        Op::Add(b) | Op::Mul(b) => {
            let (ta, tb, to) = (d(b.a), d(b.b), d(b.output));
            let ([x, z], y) = io(arena, [ta.range(), tb.range()], to.range());
            binary::reference(matches!(op, Op::Mul(_)), b, (ta, x), (tb, z), (to, y));
        }
        Op::Lut { input, output, table } => {
            let ([x], y) = io(arena, [d(*input).range()], d(*output).range());
            lut::reference(table, x, y);
        }
        Op::MaxPool(p) | Op::AvgPool(p) => {
            let (i, o) = (d(p.input), d(p.output));
            let ([x], y) = io(arena, [i.range()], o.range());
            pool::reference(matches!(op, Op::MaxPool(_)), p, i, x, o, y);
        }
        Op::GlobalAvgPool { input, output, requant } => {
            let (i, o) = (d(*input), d(*output));
            let ([x], y) = io(arena, [i.range()], o.range());
            pool::global_average(requant, i, x, o, y);
        }
        Op::Copy { input, output } => {
            let ([x], y) = io(arena, [d(*input).range()], d(*output).range());
            y.copy_from_slice(x);
        }
        Op::Transpose { input, output, to_nhwc } => {
            let (i, o) = (d(*input), d(*output));
            let ([x], y) = io(arena, [i.range()], o.range());
            layout::transpose(*to_nhwc, i.shape, x, y);
        }
        Op::Concat { inputs, output } => {
            let o = d(*output);
            layout::concat(inputs, t, o, arena);
        }
        Op::Softmax { input, output, table } => {
            let (i, o) = (d(*input), d(*output));
            let ([x], y) = io(arena, [i.range()], o.range());
            softmax::reference(table, i.shape[3] as usize, x, y);
        }
        Op::Slice { input, output, begin } => {
            let (i, o) = (d(*input), d(*output));
            let ([x], y) = io(arena, [i.range()], o.range());
            layout::slice(*begin as usize, i.shape[3] as usize, x, y, o.shape[3] as usize);
        }
        Op::Const { output, data } => arena[d(*output).range()].copy_from_slice(data),
        // State keeps its value through a run; `reset` sets it.
        Op::Variable { .. } => {}
    }
}

/// Sets a model's state to its initial values: every [`Op::Variable`] (checked by [`validate`]).
pub fn reset(op: &Op<'_>, t: &[TensorDesc<'_>], arena: &mut [u8]) {
    if let Op::Variable { output, init } = op {
        arena[t[*output as usize].range()].copy_from_slice(init);
    }
}
