//! Where a depthwise kernel's taps read an NHWC input: offsets relative to the window's corner,
//! set up once per op, and per output position either every tap's offset or the list of the taps
//! inside the image. Shared by every kernel set's depthwise convolution.

use crate::engine::micro::format::Conv;

/// Where the taps of a depthwise kernel read an NHWC input, set up once per op: the offset of
/// each tap relative to the window's corner, so that an output whose window lies inside the image
/// (most of them) costs one add per tap; windows over the padding take the checked path.
#[derive(Debug, Clone)]
pub struct Taps {
    rel: [usize; 64],
    taps: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [isize; 2],
    /// Input height, width and channels.
    hwc: [usize; 3],
}

impl Taps {
    /// The taps of `c` over an input of NHWC `shape` (at most 64 taps, checked when the op was
    /// planned).
    pub fn new(c: &Conv<'_>, [_, h, w, ch]: [usize; 4]) -> Taps {
        let kernel = [c.kernel[0] as usize, c.kernel[1] as usize];
        let dilation = [c.dilation[0] as usize, c.dilation[1] as usize];
        let mut rel = [0usize; 64];
        let mut taps = 0;
        for ky in 0..kernel[0] {
            for kx in 0..kernel[1] {
                rel[taps] = (ky * dilation[0] * w + kx * dilation[1]) * ch;
                taps += 1;
            }
        }
        Taps {
            rel,
            taps,
            kernel,
            stride: [c.stride[0] as usize, c.stride[1] as usize],
            dilation,
            pad: [c.pad[0] as isize, c.pad[1] as isize],
            hwc: [h, w, ch],
        }
    }

    /// The taps inside the image at output position (`b`, `oy`, `ox`) as [tap index, input
    /// offset of channel 0] pairs, in tap order; returns how many (taps in the padding, which
    /// read the zero point, are left out).
    #[inline]
    pub fn inside(&self, [b, oy, ox]: [usize; 3], list: &mut [[usize; 2]; 64]) -> usize {
        let [h, w, ch] = self.hwc;
        let iy0 = (oy * self.stride[0]) as isize - self.pad[0];
        let ix0 = (ox * self.stride[1]) as isize - self.pad[1];
        let mut n = 0;
        for ky in 0..self.kernel[0] {
            let iy = iy0 + (ky * self.dilation[0]) as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let row = (b * h + iy as usize) * w;
            for kx in 0..self.kernel[1] {
                let ix = ix0 + (kx * self.dilation[1]) as isize;
                if ix >= 0 && ix < w as isize {
                    list[n] = [ky * self.kernel[1] + kx, (row + ix as usize) * ch];
                    n += 1;
                }
            }
        }
        n
    }

    /// The input offset (element index of channel 0) of each tap at output position (`b`, `oy`,
    /// `ox`), or `usize::MAX` for a tap in the padding (it reads the zero point). Returns whether
    /// every tap is inside the image (no `usize::MAX`).
    #[inline]
    pub fn offsets(&self, [b, oy, ox]: [usize; 3], offsets: &mut [usize; 64]) -> bool {
        let [h, w, ch] = self.hwc;
        let iy0 = (oy * self.stride[0]) as isize - self.pad[0];
        let ix0 = (ox * self.stride[1]) as isize - self.pad[1];
        let last_y = iy0 + (self.kernel[0].saturating_sub(1) * self.dilation[0]) as isize;
        let last_x = ix0 + (self.kernel[1].saturating_sub(1) * self.dilation[1]) as isize;
        if iy0 >= 0 && ix0 >= 0 && last_y < h as isize && last_x < w as isize {
            let base = ((b * h + iy0 as usize) * w + ix0 as usize) * ch;
            for (o, r) in offsets.iter_mut().zip(&self.rel[..self.taps]) {
                *o = base + r;
            }
            return true;
        }
        let mut t = 0;
        for ky in 0..self.kernel[0] {
            let iy = iy0 + (ky * self.dilation[0]) as isize;
            let row_inside = iy >= 0 && iy < h as isize;
            for kx in 0..self.kernel[1] {
                let ix = ix0 + (kx * self.dilation[1]) as isize;
                offsets[t] = if row_inside && ix >= 0 && ix < w as isize {
                    ((b * h + iy as usize) * w + ix as usize) * ch
                } else {
                    usize::MAX
                };
                t += 1;
            }
        }
        false
    }
}
