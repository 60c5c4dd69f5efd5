//! Lowering of layout operators (Reshape, Flatten, Squeeze, Unsqueeze) and pooling geometry.

#[allow(unused_imports)]
use super::*;

impl<'a> Ctx<'a> {
    /// Copy in ONNX element order from `x` to `out`, through NCHW order where NHWC differs, and
    /// requantizing (table) when their quantization differs.
    pub(super) fn lower_reshape(&mut self, n: &NodeProto, x: u16, out: u16) -> Result<Vec<Spec>, LowerError> {
        let mut specs = vec![];
        let spatial = |t: &T| t.rank == 4 && t.shape[1] * t.shape[2] > 1 && t.shape[3] > 1;
        let mut src = x;
        if spatial(&self.tensors[x as usize]) {
            let t = &self.tensors[x as usize];
            let tmp = T {
                name: format!("{}:nchw", t.name),
                shape: t.shape,
                rank: t.rank,
                layout: Layout::Nchw,
                scale: t.scale,
                zero_point: t.zero_point,
            };
            let id = self.add_tensor(tmp);
            specs.push(Spec::Transpose { input: src, output: id, to_nhwc: false });
            src = id;
        }
        let out_spatial = spatial(&self.tensors[out as usize]);
        let dst = if out_spatial {
            let t = &self.tensors[out as usize];
            let tmp = T {
                name: format!("{}:nchw", t.name),
                shape: t.shape,
                rank: t.rank,
                layout: Layout::Nchw,
                scale: t.scale,
                zero_point: t.zero_point,
            };
            self.add_tensor(tmp)
        } else {
            out
        };
        let (ts, td) = (&self.tensors[src as usize], &self.tensors[dst as usize]);
        if ts.len() != td.len() {
            return Err(unsupported(n, "sizes differ"));
        }
        if ts.scale == td.scale && ts.zero_point == td.zero_point {
            specs.push(Spec::Copy { input: src, output: dst });
        } else {
            specs.push(self.identity_table(src, dst));
        }
        if out_spatial {
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
