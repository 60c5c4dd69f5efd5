//! Lowering of layout operators (Reshape, Flatten, Squeeze, Unsqueeze) and pooling geometry.

#[allow(unused_imports)]
use super::*;

impl<'a> Ctx<'a> {
    /// Copy in ONNX element order from `x` to `out`, through NCHW order where NHWC differs, and
    /// requantizing (table) when their quantization differs. A reshape that only merges or splits
    /// the positions of a plain tensor (`[N, C, H, W]` ↔ `[N, C, H·W]`) keeps the NHWC bytes: one
    /// copy.
    pub(super) fn lower_reshape(&mut self, n: &NodeProto, x: u16, out: u16) -> Result<Vec<Spec>, LowerError> {
        let mut specs = vec![];
        let (ts, td) = (&self.tensors[x as usize], &self.tensors[out as usize]);
        if ts.len() != td.len() {
            return Err(unsupported(n, "sizes differ"));
        }
        let positions = |t: &T| t.layout == Layout::Plain && t.rank >= 3;
        let same_bytes = positions(ts)
            && positions(td)
            && (ts.shape[0], ts.shape[3], ts.shape[1] * ts.shape[2])
                == (td.shape[0], td.shape[3], td.shape[1] * td.shape[2]);
        let mut src = x;
        if ts.reordered() && !same_bytes {
            let tmp = T { layout: Layout::Nchw, ..ts.like(format!("{}:nchw", ts.name)) };
            let id = self.add_tensor(tmp);
            specs.push(Spec::Transpose { input: src, output: id, to_nhwc: false });
            src = id;
        }
        let out_reordered = self.tensors[out as usize].reordered() && !same_bytes;
        let dst = if out_reordered {
            let t = &self.tensors[out as usize];
            let tmp = T { layout: Layout::Nchw, ..t.like(format!("{}:nchw", t.name)) };
            self.add_tensor(tmp)
        } else {
            out
        };
        let (ts, td) = (&self.tensors[src as usize], &self.tensors[dst as usize]);
        if ts.scale == td.scale && ts.zero_point == td.zero_point {
            specs.push(Spec::Copy { input: src, output: dst });
        } else {
            specs.push(self.identity_table(src, dst));
        }
        if out_reordered {
            specs.push(Spec::Transpose { input: dst, output: out, to_nhwc: true });
        }
        Ok(specs)
    }

    pub(super) fn pool_params(&self, n: &NodeProto, x: u16) -> Result<PoolGeometry, LowerError> {
        let k = ints(n, "kernel_shape");
        if k.len() != 2 {
            return Err(unsupported(n, "only 2-D pooling"));
        }
        if attr(n, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") || int(n, "ceil_mode", 0) != 0 {
            return Err(unsupported(n, "auto_pad or ceil_mode"));
        }
        let s = ints(n, "strides");
        let p = ints(n, "pads");
        let _ = x;
        let u = |v: i64| v.clamp(0, u16::MAX as i64) as u16;
        Ok((
            [u(k[0]), u(k[1])],
            [u(s.first().copied().unwrap_or(1)), u(s.get(1).copied().unwrap_or(1))],
            if p.len() == 4 { [u(p[0]), u(p[1]), u(p[2]), u(p[3])] } else { [0; 4] },
        ))
    }
}
