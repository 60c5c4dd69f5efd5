//! Lowering of convolutions and matrix products (Conv, Gemm, MatMul) to integer `Conv` and
//! `FullyConnected` ops: weights per output channel, biases and requantization tables.

#[allow(unused_imports)]
use super::*;

impl<'a> Ctx<'a> {
    pub(super) fn lower_conv(&mut self, n: &NodeProto, out: u16) -> Result<Spec, LowerError> {
        let x = self.dq(&n.input[0]).ok_or_else(|| unsupported(n, "input is not an int8 activation"))?;
        let (w, ws, axis) = self.weight(&n.input[1], n)?;
        if ws.len() != 1 && axis != 0 {
            return Err(unsupported(n, "per-channel weights must be along the output channels"));
        }
        let shape = w.shape().to_vec();
        if shape.len() != 4 {
            return Err(unsupported(n, "only 2-D convolutions"));
        }
        let (cout, cin_g, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
        if shape.iter().any(|&d| d == 0 || d > u16::MAX as usize) {
            return Err(unsupported(n, format!("weights of shape {shape:?}")));
        }
        let wq = w.to_plain_array_view::<i8>().map_err(|e| LowerError::Model(format!("{e:#}")))?;
        // [Cout][Cin/g][Kh][Kw] → [Cout][Kh][Kw][Cin/g]
        let mut weights = vec![0u8; cout * kh * kw * cin_g];
        for co in 0..cout {
            for ci in 0..cin_g {
                for y in 0..kh {
                    for x_ in 0..kw {
                        weights[((co * kh + y) * kw + x_) * cin_g + ci] = wq[[co, ci, y, x_]] as u8;
                    }
                }
            }
        }
        let (tx, to) = (&self.tensors[x as usize], &self.tensors[out as usize]);
        let bias = self.bias(n.input.get(2), tx.scale, &ws, cout, n)?;
        let sx = tx.scale as f64;
        let sy = to.scale as f64;
        let reals: Vec<f64> = (0..cout).map(|c| sx * ws[if ws.len() == 1 { 0 } else { c }] as f64 / sy).collect();
        let requant = requant_table(reals.iter().copied(), n)?;
        let strides = ints(n, "strides");
        let dil = ints(n, "dilations");
        let mut pads = ints(n, "pads");
        let groups = int(n, "group", 1);
        let auto_pad = attr(n, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).into_owned()).unwrap_or_default();
        let (ih, iw) = (tx.shape[1] as i64, tx.shape[2] as i64);
        let s = [strides.first().copied().unwrap_or(1), strides.get(1).copied().unwrap_or(1)];
        let d = [dil.first().copied().unwrap_or(1), dil.get(1).copied().unwrap_or(1)];
        let positive = |v: &[i64]| v.iter().all(|&x| (1..=u16::MAX as i64).contains(&x));
        if !positive(&s) || !positive(&d) || !positive(&[groups]) {
            return Err(unsupported(
                n,
                format!("strides {s:?}, dilations {d:?} and group {groups} must be 1 to 65535"),
            ));
        }
        if auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER" {
            let mut p = vec![0i64; 4];
            for (axis, (size, k)) in [(ih, kh as i64), (iw, kw as i64)].into_iter().enumerate() {
                let out = (size + s[axis] - 1) / s[axis];
                let total = ((out - 1) * s[axis] + (k - 1) * d[axis] + 1 - size).max(0);
                let (a, b) = if auto_pad == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
                p[axis] = a;
                p[axis + 2] = b;
            }
            pads = p;
        } else if auto_pad == "VALID" || pads.is_empty() {
            pads = vec![0; 4];
        }
        if pads.len() != 4 || pads.iter().any(|&p| !(0..=u16::MAX as i64).contains(&p)) {
            return Err(unsupported(n, format!("pads {pads:?}: give 4 values from 0 to 65535")));
        }
        let u = |v: i64| v.clamp(0, u16::MAX as i64) as u16;
        let c = ConvParams {
            input: x,
            output: out,
            kernel: [kh as u16, kw as u16],
            stride: [u(s[0]), u(s[1])],
            dilation: [u(d[0]), u(d[1])],
            pad: [u(pads[0]), u(pads[1]), u(pads[2]), u(pads[3])],
            groups: u(groups),
        };
        Ok(Spec::Conv { c, weights, bias, requant, reals, clamp: [-128, 127] })
    }

    pub(super) fn lower_fc(&mut self, n: &NodeProto, out: u16) -> Result<Spec, LowerError> {
        let x = self.dq(&n.input[0]).ok_or_else(|| unsupported(n, "input is not an int8 activation"))?;
        let (w, ws, axis) = self.weight(&n.input[1], n)?;
        let shape = w.shape().to_vec();
        if shape.len() != 2 {
            return Err(unsupported(n, "weights must be a matrix"));
        }
        let trans_b = n.op_type == "Gemm" && int(n, "transB", 0) != 0;
        if n.op_type == "Gemm"
            && (int(n, "transA", 0) != 0
                || attr(n, "alpha").is_some_and(|a| a.f != 1.0)
                || attr(n, "beta").is_some_and(|a| a.f != 1.0))
        {
            return Err(unsupported(n, "Gemm with transA, alpha or beta"));
        }
        let (cout, cin) = if trans_b { (shape[0], shape[1]) } else { (shape[1], shape[0]) };
        let out_axis = if trans_b { 0 } else { 1 };
        if ws.len() != 1 && axis != out_axis {
            return Err(unsupported(n, "per-channel weights must be along the outputs"));
        }
        let wq = w.to_plain_array_view::<i8>().map_err(|e| LowerError::Model(format!("{e:#}")))?;
        let mut weights = vec![0u8; cout * cin];
        for co in 0..cout {
            for ci in 0..cin {
                weights[co * cin + ci] = if trans_b { wq[[co, ci]] } else { wq[[ci, co]] } as u8;
            }
        }
        let (tx, to) = (&self.tensors[x as usize], &self.tensors[out as usize]);
        if tx.shape[0] == 0 || tx.len() / tx.shape[0] as usize != cin {
            return Err(unsupported(n, "input length differs from the weights' input size"));
        }
        let bias = self.bias(n.input.get(2), tx.scale, &ws, cout, n)?;
        let (sx, sy) = (tx.scale as f64, to.scale as f64);
        let reals: Vec<f64> = (0..cout).map(|c| sx * ws[if ws.len() == 1 { 0 } else { c }] as f64 / sy).collect();
        let requant = requant_table(reals.iter().copied(), n)?;
        Ok(Spec::Fc { input: x, output: out, weights, bias, requant, reals, clamp: [-128, 127] })
    }
}
