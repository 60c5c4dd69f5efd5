//! Convolution (regular, grouped, depthwise) on NHWC int8 tensors.
//!
//! `out[n, oy, ox, co] = sat(zy + rq[co](bias[co] + Σ (x[n, iy, ix, ci] - zx) · w[co, ky, kx, ci]))`
//! with `iy = oy·sy - pad_top + ky·dy`, positions outside the input skipped (padding is the real
//! value zero).

use crate::engine::micro::format::{i32_at, requant_at, rounding, Conv, TensorDesc, TFLITE_ROUNDING};
use crate::quant::saturate;

/// Output size of one spatial axis.
pub fn out_size(input: u32, kernel: u16, stride: u16, dilation: u16, pad_a: u16, pad_b: u16) -> Option<u32> {
    if stride == 0 || kernel == 0 || dilation == 0 {
        return None;
    }
    let span = (kernel as u64 - 1) * dilation as u64 + 1;
    let padded = input as u64 + pad_a as u64 + pad_b as u64;
    if padded < span {
        return None;
    }
    u32::try_from((padded - span) / stride as u64 + 1).ok()
}

/// Checks that `k` products of int8 values plus the largest bias fit the 32-bit accumulators
/// every kernel uses (|x - zx| ≤ 255, |w| ≤ 128).
pub fn accumulator_fits(k: usize, bias: &[u8]) -> Result<(), &'static str> {
    let largest = (0..bias.len() / 4).map(|c| (i32_at(bias, c) as i64).abs()).max().unwrap_or(0);
    let products = (k as u64).checked_mul(255 * 128).ok_or("reduction too long")?;
    if largest as u64 + products >= 1 << 31 {
        return Err("reduction too long or bias too large: the 32-bit accumulator could overflow");
    }
    Ok(())
}

/// Checks int8 weights are symmetric, in [-127, 127]: the widening multiply-accumulate of the NEON
/// kernels sums two products in 16 bits, which overflows only for two −128·−128 products.
pub fn weights_fit(weights: &[u8]) -> Result<(), &'static str> {
    if weights.contains(&0x80) {
        return Err("a weight is -128: int8 weights are symmetric, in [-127, 127]");
    }
    Ok(())
}

/// Checks a requantization step: shift in 1..=62.
pub fn requant_fits(r: crate::quant::Requant) -> Result<(), &'static str> {
    if !(1..=62).contains(&r.shift) {
        return Err("requantization shift out of 1..=62");
    }
    Ok(())
}

/// Checks a requantization table of `channels` entries: every shift in 1..=62, and one rounding
/// flag for all.
pub fn requant_table_fits(table: &[u8], channels: usize) -> Result<(), &'static str> {
    let flag = table.get(4).map_or(0, |b| b & TFLITE_ROUNDING);
    for ch in 0..channels {
        if table[ch * 5 + 4] & TFLITE_ROUNDING != flag {
            return Err("requantization entries disagree on their rounding");
        }
        requant_fits(requant_at(table, ch))?;
    }
    Ok(())
}

/// Checks an output clamp: low ≤ high.
pub fn clamp_fits(clamp: [i8; 2]) -> Result<(), &'static str> {
    if clamp[0] > clamp[1] {
        return Err("clamp low above high");
    }
    Ok(())
}

/// Checks shapes and table sizes.
pub fn validate(c: &Conv<'_>, i: &TensorDesc<'_>, o: &TensorDesc<'_>) -> Result<(), &'static str> {
    let [n, h, w, cin] = i.shape;
    let cout = o.shape[3] as usize;
    if c.groups == 0 {
        return Err("groups is 0");
    }
    let g = c.groups as u32;
    if !cin.is_multiple_of(g) || !(cout as u32).is_multiple_of(g) {
        return Err("channels not divisible by groups");
    }
    let oh =
        out_size(h, c.kernel[0], c.stride[0], c.dilation[0], c.pad[0], c.pad[2]).ok_or("kernel larger than input")?;
    let ow =
        out_size(w, c.kernel[1], c.stride[1], c.dilation[1], c.pad[1], c.pad[3]).ok_or("kernel larger than input")?;
    if o.shape != [n, oh, ow, cout as u32] {
        return Err("output shape does not follow from input, kernel, stride and padding");
    }
    let k = c.kernel[0] as usize * c.kernel[1] as usize * (cin / g) as usize;
    if Some(c.weights.len()) != cout.checked_mul(k) {
        return Err("weights size");
    }
    if Some(c.bias.len()) != cout.checked_mul(4) || Some(c.requant.len()) != cout.checked_mul(5) {
        return Err("bias or requantization table size");
    }
    requant_table_fits(c.requant, cout)?;
    clamp_fits(c.clamp)?;
    weights_fit(c.weights)?;
    accumulator_fits(k, c.bias)
}

/// The reference kernel: plain loops, no unsafe, the definition every optimized kernel matches.
pub fn reference(c: &Conv<'_>, ti: &TensorDesc<'_>, x: &[u8], to: &TensorDesc<'_>, y: &mut [u8]) {
    let [n, h, w, cin] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, cout] = to.shape.map(|d| d as usize);
    let g = c.groups.max(1) as usize;
    let (cin_g, cout_g) = (cin / g, cout / g);
    let (kh, kw) = (c.kernel[0] as usize, c.kernel[1] as usize);
    let zx = ti.zero_point;
    let rounding = rounding(c.requant);
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..cout {
                    let group = co / cout_g;
                    let mut acc = i32_at(c.bias, co);
                    for ky in 0..kh {
                        let iy = (oy * c.stride[0] as usize + ky * c.dilation[0] as usize) as isize - c.pad[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix =
                                (ox * c.stride[1] as usize + kx * c.dilation[1] as usize) as isize - c.pad[1] as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let xb = ((b * h + iy as usize) * w + ix as usize) * cin + group * cin_g;
                            let wb = ((co * kh + ky) * kw + kx) * cin_g;
                            for ci in 0..cin_g {
                                acc += (x[xb + ci] as i8 as i32 - zx) * c.weights[wb + ci] as i8 as i32;
                            }
                        }
                    }
                    let v = requant_at(c.requant, co).apply_with(rounding, acc as i64);
                    y[((b * oh + oy) * ow + ox) * cout + co] = saturate(v, to.zero_point, c.clamp[0], c.clamp[1]) as u8;
                }
            }
        }
    }
}
