//! Max, average and global average pooling on NHWC int8 tensors.

use super::conv::out_size;
use crate::engine::micro::format::{Pool, TensorDesc};
use crate::quant::{saturate, Requant};

/// Checks the output shape.
pub fn validate(p: &Pool, i: &TensorDesc<'_>, o: &TensorDesc<'_>) -> Result<(), &'static str> {
    let oh = out_size(i.shape[1], p.kernel[0], p.stride[0], 1, p.pad[0], p.pad[2]).ok_or("window larger than input")?;
    let ow = out_size(i.shape[2], p.kernel[1], p.stride[1], 1, p.pad[1], p.pad[3]).ok_or("window larger than input")?;
    if o.shape != [i.shape[0], oh, ow, i.shape[3]] {
        return Err("output shape does not follow from input, window, stride and padding");
    }
    if p.kernel[0] as u32 * p.kernel[1] as u32 > 1 << 16 {
        return Err("window larger than 65536 positions");
    }
    super::conv::requant_fits(p.requant)
}

/// The reference kernel: max of the valid window positions, or their rounded mean.
pub fn reference(max: bool, p: &Pool, ti: &TensorDesc<'_>, x: &[u8], to: &TensorDesc<'_>, y: &mut [u8]) {
    let [n, h, w, c] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, _] = to.shape.map(|d| d as usize);
    let zx = ti.zero_point as i64;
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let (mut best, mut sum, mut count) = (i64::MIN, 0i64, 0i64);
                    for ky in 0..p.kernel[0] as usize {
                        let iy = (oy * p.stride[0] as usize + ky) as isize - p.pad[0] as isize;
                        for kx in 0..p.kernel[1] as usize {
                            let ix = (ox * p.stride[1] as usize + kx) as isize - p.pad[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let v = x[((b * h + iy as usize) * w + ix as usize) * c + ch] as i8 as i64 - zx;
                            best = best.max(v);
                            sum += v;
                            count += 1;
                        }
                    }
                    let v = if max {
                        p.requant.apply(best)
                    } else {
                        let div = if p.count_include_pad {
                            (p.kernel[0] as i64) * (p.kernel[1] as i64)
                        } else {
                            count.max(1)
                        };
                        let scaled = sum * p.requant.multiplier as i64;
                        // Rounded division (half away from zero), then the shift.
                        let q = (scaled + scaled.signum() * div / 2) / div;
                        crate::quant::round_shift(q, p.requant.shift)
                    };
                    y[((b * oh + oy) * ow + ox) * c + ch] = saturate(v, to.zero_point, -128, 127) as u8;
                }
            }
        }
    }
}

/// Checks a mean over H and W: the output shape, the requantization, and a sum of int8 values
/// that fits 32 bits.
pub fn validate_global_average(rq: &Requant, i: &TensorDesc<'_>, o: &TensorDesc<'_>) -> Result<(), &'static str> {
    if o.shape != [i.shape[0], 1, 1, i.shape[3]] {
        return Err("output must be [N, 1, 1, C]");
    }
    if i.shape[1] as u64 * i.shape[2] as u64 > 1 << 22 {
        return Err("more than 2^22 positions to average");
    }
    super::conv::requant_fits(*rq)
}

/// Mean over H and W: `out[n, c] = sat(zy + rq(Σ (x - zx)))`, `rq` including `1 / (H·W)`.
pub fn global_average(rq: &Requant, ti: &TensorDesc<'_>, x: &[u8], to: &TensorDesc<'_>, y: &mut [u8]) {
    let [n, h, w, c] = ti.shape.map(|d| d as usize);
    let zx = ti.zero_point as i64;
    for b in 0..n {
        for ch in 0..c {
            let mut sum = 0i64;
            for p in 0..h * w {
                sum += x[(b * h * w + p) * c + ch] as i8 as i64 - zx;
            }
            y[b * c + ch] = saturate(rq.apply(sum), to.zero_point, -128, 127) as u8;
        }
    }
}
