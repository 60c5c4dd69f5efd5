//! Data movement: NCHW ↔ NHWC, channel concatenation and channel slices.

use super::io;
use crate::engine::micro::format::TensorDesc;

/// NCHW → NHWC (`to_nhwc`) or back; `shape` is N, H, W, C.
pub fn transpose(to_nhwc: bool, shape: [u32; 4], x: &[u8], y: &mut [u8]) {
    let [n, h, w, c] = shape.map(|d| d as usize);
    for b in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                let nchw = (b * c + ch) * h * w + p;
                let nhwc = (b * h * w + p) * c + ch;
                if to_nhwc {
                    y[nhwc] = x[nchw];
                } else {
                    y[nchw] = x[nhwc];
                }
            }
        }
    }
}

/// Concatenates inputs along the channel axis into `o`.
pub fn concat(inputs: &[u8], t: &[TensorDesc<'_>], o: &TensorDesc<'_>, arena: &mut [u8]) {
    let [n, h, w, c] = o.shape.map(|d| d as usize);
    let mut offset = 0;
    for id in inputs.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])) {
        let ti = &t[id as usize];
        let ci = ti.shape[3] as usize;
        let ([x], y) = io(arena, [ti.range()], o.range());
        for p in 0..n * h * w {
            y[p * c + offset..p * c + offset + ci].copy_from_slice(&x[p * ci..(p + 1) * ci]);
        }
        offset += ci;
    }
}

/// Checks a channel slice: the output has the input's N, H, W and quantization, and its channels
/// `begin..begin + C_out` lie inside the input's.
pub fn validate_slice(begin: u16, i: &TensorDesc<'_>, o: &TensorDesc<'_>) -> Result<(), &'static str> {
    if i.shape[..3] != o.shape[..3] {
        return Err("a slice keeps N, H and W");
    }
    if begin as u32 + o.shape[3] > i.shape[3] {
        return Err("sliced channels lie past the input's");
    }
    if (i.scale, i.zero_point) != (o.scale, o.zero_point) {
        return Err("a slice keeps the quantization");
    }
    Ok(())
}

/// Copies channels `begin..begin + co` of every pixel of `x` (`ci` channels) into `y`.
pub fn slice(begin: usize, ci: usize, x: &[u8], y: &mut [u8], co: usize) {
    for (src, dst) in x.chunks_exact(ci).zip(y.chunks_exact_mut(co)) {
        dst.copy_from_slice(&src[begin..begin + co]);
    }
}
