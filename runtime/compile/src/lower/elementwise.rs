//! Lowering of elementwise operators: adds and multiplies of two int8 tensors, and chains of
//! unary functions evaluated once into 256-entry tables.

#[allow(unused_imports)]
use super::*;

impl<'a> Ctx<'a> {
    pub(super) fn lower_binary(&mut self, n: &NodeProto, a: u16, b: u16, out: u16) -> Result<Spec, LowerError> {
        let (mut a, mut b) = (a, b);
        let (ta, tb) = (&self.tensors[a as usize], &self.tensors[b as usize]);
        let to_shape = self.tensors[out as usize].shape;
        let sub = n.op_type == "Sub";
        if ta.shape != to_shape {
            if tb.shape == to_shape && !sub {
                std::mem::swap(&mut a, &mut b);
            } else {
                return Err(unsupported(n, "the first operand must have the output's shape"));
            }
        }
        let (ta, tb, to) = (&self.tensors[a as usize], &self.tensors[b as usize], &self.tensors[out as usize]);
        if ta.shape.iter().zip(tb.shape).any(|(&x, y)| y != x && y != 1) {
            return Err(unsupported(n, "broadcast beyond dimensions of 1"));
        }
        let (sa, sb, sy) = (ta.scale as f64, tb.scale as f64, to.scale as f64);
        if n.op_type == "Mul" {
            let ma = requant(sa * sb / sy, n)?;
            return Ok(Spec::Mul(Binary { a, b, output: out, ma, mb: ma, clamp: [-128, 127] }));
        }
        let (ra, rb) = (sa / sy, sb / sy);
        let big = requant(ra.max(rb), n)?;
        let scaled = |r: f64| (r * (1u64 << big.shift) as f64).round() as i64;
        let (ma_m, mb_m) = (scaled(ra), scaled(rb) * if sub { -1 } else { 1 });
        let ma = Requant { multiplier: ma_m as i32, shift: big.shift };
        let mb = Requant { multiplier: mb_m as i32, shift: big.shift };
        Ok(Spec::Add(Binary { a, b, output: out, ma, mb, clamp: [-128, 127] }))
    }

    /// A table for the elementwise chain computing `tensor` from one int8 activation (or one
    /// float tensor the tail lowering computes in int8).
    pub(super) fn lower_chain(&mut self, tensor: &str, out: u16, q: &NodeProto) -> Result<Spec, LowerError> {
        let chain = self.chain(tensor);
        let nodes = chain.nodes;
        let root_name = match chain.roots.as_slice() {
            [r] => r.clone(),
            [] => return Err(unsupported(q, format!("`{tensor}` is constant"))),
            roots => {
                // Name the node that has no integer form, if one does not.
                for r in roots {
                    self.root(r)?;
                }
                return Err(unsupported(q, format!("`{tensor}` depends on several int8 tensors through float ops")));
            }
        };
        let input = self.root(&root_name)?;
        // An elementwise result keeps its input's layout (a channels-last tail tensor).
        let (shape, layout) = (self.tensors[input as usize].shape, self.tensors[input as usize].layout);
        if layout != self.tensors[out as usize].layout {
            (self.tensors[out as usize].shape, self.tensors[out as usize].layout) = (shape, layout);
        }
        let ti = &self.tensors[input as usize];
        let to = &self.tensors[out as usize];
        let xs: Vec<f32> = (-128i32..=127).map(|v| (v - ti.zero_point) as f32 * ti.scale).collect();
        let ys = if nodes.is_empty() { xs } else { self.evaluate_chain(&nodes, &root_name, tensor, &xs, q)? };
        let table = ys
            .iter()
            .map(|&y| ((y / to.scale).round_ties_even() + to.zero_point as f32).clamp(-128.0, 127.0) as i8 as u8)
            .collect();
        Ok(Spec::Lut { input, output: out, table })
    }

    /// Runs the chain's float nodes on the 256 dequantized input values, with tract.
    pub(super) fn evaluate_chain(
        &self,
        nodes: &[usize],
        root: &str,
        output: &str,
        xs: &[f32],
        q: &NodeProto,
    ) -> Result<Vec<f32>, LowerError> {
        let mut consts = vec![];
        let mut node_protos = vec![];
        for &ix in nodes {
            let mut n = self.g.node[ix].clone();
            for i in n.input.iter_mut() {
                if i == root {
                    *i = "lut_input".into();
                } else if let Some(t) = self.inits.get(i.as_str()) {
                    consts.push((*t).clone());
                }
            }
            node_protos.push(n);
        }
        let input = pb::ValueInfoProto {
            name: "lut_input".into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto {
                        dim: vec![pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(256)),
                            ..Default::default()
                        }],
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mini = ModelProto {
            ir_version: self.model.ir_version,
            opset_import: self.model.opset_import.clone(),
            graph: Some(GraphProto {
                node: node_protos,
                initializer: consts,
                input: vec![input],
                output: vec![pb::ValueInfoProto { name: output.to_string(), ..Default::default() }],
                name: "lut".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let fail = |e: TractError| unsupported(q, format!("evaluating the elementwise chain: {e:#}"));
        let model = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .with_ignore_output_types(true)
            .model_for_proto_model(&mini)
            .map_err(fail)?;
        let plan = model.into_optimized().map_err(fail)?.into_runnable().map_err(fail)?;
        let x = tract_ndarray::Array1::from_vec(xs.to_vec()).into_dyn().into_tensor();
        let out = plan.run(tvec!(x.into_tvalue())).map_err(fail)?;
        let y = f32s(&out[0].clone().into_tensor())?;
        if y.len() != 256 {
            return Err(unsupported(q, "the elementwise chain changes the shape"));
        }
        Ok(y)
    }

    /// A table requantizing `x` into `out`'s scale and zero point.
    pub(super) fn identity_table(&self, x: u16, out: u16) -> Spec {
        let (ti, to) = (&self.tensors[x as usize], &self.tensors[out as usize]);
        let table = (-128i32..=127)
            .map(|v| {
                let real = (v - ti.zero_point) as f32 * ti.scale;
                ((real / to.scale).round_ties_even() + to.zero_point as f32).clamp(-128.0, 127.0) as i8 as u8
            })
            .collect();
        Spec::Lut { input: x, output: out, table }
    }
}
