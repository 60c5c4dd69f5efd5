//! One TFLite operator as ONNX nodes: the float operators of the image models (convolutions,
//! pools, element-wise arithmetic and activations, padding, reshapes, transposes, resizes,
//! concatenation and splits, fully connected layers, softmax, mean) and DEQUANTIZE of constant
//! weights, folded. Anything else is
//! refused by name.

use super::Builder;
use crate::schema::{self, ActivationFunctionType, BuiltinOperator as B, Padding};
use crate::{ElementType, OpKind, Operator};
use tract_onnx::pb;

/// Translates operator `k`.
pub(super) fn translate(b: &mut Builder<'_, '_>, op: &Operator<'_>) -> Result<(), String> {
    let OpKind::Builtin(code) = op.kind else {
        return Err("a custom operator: not translated".into());
    };
    let raw = &op.raw;
    let input = |i: usize| -> Result<usize, String> {
        op.inputs.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
    };
    let output = |i: usize| -> Result<usize, String> {
        op.outputs.get(i).copied().ok_or_else(|| format!("output {i} is missing"))
    };
    match code {
        B::DEQUANTIZE => {
            let (x, y) = (input(0)?, output(0)?);
            let t = b.tensor(x);
            let values = match (t.element, t.data) {
                (ElementType::Float16, Some(_)) => b.constant_f32(x)?.expect("a constant"),
                (ElementType::Int8 | ElementType::UInt8, Some(data)) => {
                    let q = t.quantization.as_ref().ok_or("quantized weights without scale")?;
                    let inner: usize = t.shape.iter().skip(q.axis + 1).product();
                    let channels = t.shape.get(q.axis).copied().unwrap_or(1).max(1);
                    data.iter()
                        .enumerate()
                        .map(|(i, &byte)| {
                            let c = if q.per_channel() { (i / inner.max(1)) % channels } else { 0 };
                            let v = if t.element == ElementType::Int8 { byte as i8 as i64 } else { byte as i64 };
                            match (q.zero_point.get(c), q.scale.get(c)) {
                                (Some(&z), Some(&s)) => Ok((v - z) as f32 * s),
                                _ => Err(format!("no scale or zero point for channel {c}")),
                            }
                        })
                        .collect::<Result<_, String>>()?
                }
                _ => return Err("DEQUANTIZE of an activation: quantized models are not translated yet".into()),
            };
            b.folded.insert(y, values);
            Ok(())
        }
        B::CONV_2D => {
            let o = raw.builtin_options_as_conv_2_doptions().ok_or("no Conv2DOptions")?;
            let (x, w) = (input(0)?, input(1)?);
            let ws = b.tensor(w).shape.clone();
            if ws.len() != 4 {
                return Err(format!("filter of rank {}, not 4", ws.len()));
            }
            let filter = b.constant_f32(w)?.ok_or("the filter is not a constant")?;
            // OHWI → OIHW.
            let (oc, kh, kw, ic) = (ws[0], ws[1], ws[2], ws[3]);
            let mut oihw = vec![0.0; filter.len()];
            for o_ in 0..oc {
                for h in 0..kh {
                    for w_ in 0..kw {
                        for i in 0..ic {
                            oihw[((o_ * ic + i) * kh + h) * kw + w_] = filter[((o_ * kh + h) * kw + w_) * ic + i];
                        }
                    }
                }
            }
            let weight = b.const_f32("filter", &[oc, ic, kh, kw], oihw);
            let groups = b.tensor(x).shape.get(3).copied().unwrap_or(ic) / ic.max(1);
            conv(
                b,
                op,
                x,
                weight,
                [kh, kw],
                groups,
                (o.stride_h(), o.stride_w()),
                (o.dilation_h_factor(), o.dilation_w_factor()),
                o.padding(),
                o.fused_activation_function(),
            )
        }
        B::DEPTHWISE_CONV_2D => {
            let o = raw.builtin_options_as_depthwise_conv_2_doptions().ok_or("no DepthwiseConv2DOptions")?;
            let (x, w) = (input(0)?, input(1)?);
            let ws = b.tensor(w).shape.clone();
            if ws.len() != 4 || ws[0] != 1 {
                return Err(format!("filter of shape {ws:?}, not [1, H, W, C]"));
            }
            let filter = b.constant_f32(w)?.ok_or("the filter is not a constant")?;
            let (kh, kw, oc) = (ws[1], ws[2], ws[3]);
            let channels = b.tensor(x).shape.get(3).copied().ok_or("input is not NHWC")?;
            // [1, H, W, C·M] → [C·M, 1, H, W], one group per input channel.
            let mut out = vec![0.0; filter.len()];
            for h in 0..kh {
                for w_ in 0..kw {
                    for c in 0..oc {
                        out[(c * kh + h) * kw + w_] = filter[(h * kw + w_) * oc + c];
                    }
                }
            }
            let weight = b.const_f32("filter", &[oc, 1, kh, kw], out);
            conv(
                b,
                op,
                x,
                weight,
                [kh, kw],
                channels,
                (o.stride_h(), o.stride_w()),
                (o.dilation_h_factor(), o.dilation_w_factor()),
                o.padding(),
                o.fused_activation_function(),
            )
        }
        B::MAX_POOL_2D | B::AVERAGE_POOL_2D => {
            let o = raw.builtin_options_as_pool_2_doptions().ok_or("no Pool2DOptions")?;
            let (x, y) = (input(0)?, output(0)?);
            let k = [o.filter_height().max(0) as usize, o.filter_width().max(0) as usize];
            let pads = pads(&b.tensor(x).shape, k, (o.stride_h(), o.stride_w()), (1, 1), o.padding())?;
            let xs = b.input(x)?;
            let nchw = transpose(b, xs, &[0, 3, 1, 2]);
            let pooled = b.fresh("pooled");
            let kind = if code == B::MAX_POOL_2D { "MaxPool" } else { "AveragePool" };
            let attrs = vec![
                ints("kernel_shape", k.iter().map(|&v| v as i64).collect()),
                ints("strides", vec![o.stride_h() as i64, o.stride_w() as i64]),
                ints("pads", pads),
            ];
            b.node(kind, vec![nchw], vec![pooled.clone()], attrs);
            let nhwc = transpose(b, pooled, &[0, 2, 3, 1]);
            activation(b, nhwc, y, o.fused_activation_function())
        }
        B::ADD | B::SUB | B::MUL => {
            let act = match code {
                B::ADD => raw.builtin_options_as_add_options().map(|o| o.fused_activation_function()),
                B::SUB => raw.builtin_options_as_sub_options().map(|o| o.fused_activation_function()),
                _ => raw.builtin_options_as_mul_options().map(|o| o.fused_activation_function()),
            }
            .unwrap_or(ActivationFunctionType::NONE);
            let (l, r) = (b.input(input(0)?)?, b.input(input(1)?)?);
            let sum = b.fresh("arith");
            let kind = match code {
                B::ADD => "Add",
                B::SUB => "Sub",
                _ => "Mul",
            };
            b.node(kind, vec![l, r], vec![sum.clone()], vec![]);
            activation(b, sum, output(0)?, act)
        }
        B::RELU | B::RELU6 | B::RELU_N1_TO_1 | B::LOGISTIC | B::TANH => {
            let x = b.input(input(0)?)?;
            let act = match code {
                B::RELU => ActivationFunctionType::RELU,
                B::RELU6 => ActivationFunctionType::RELU6,
                B::RELU_N1_TO_1 => ActivationFunctionType::RELU_N1_TO_1,
                B::TANH => ActivationFunctionType::TANH,
                _ => {
                    let y = b.names[output(0)?].clone();
                    b.node("Sigmoid", vec![x], vec![y], vec![]);
                    return Ok(());
                }
            };
            activation(b, x, output(0)?, act)
        }
        B::PRELU => {
            let (x, alpha) = (b.input(input(0)?)?, b.input(input(1)?)?);
            let y = b.names[output(0)?].clone();
            b.node("PRelu", vec![x, alpha], vec![y], vec![]);
            Ok(())
        }
        B::LEAKY_RELU => {
            let alpha = raw.builtin_options_as_leaky_relu_options().map_or(0.2, |o| o.alpha());
            let x = b.input(input(0)?)?;
            let y = b.names[output(0)?].clone();
            b.node("LeakyRelu", vec![x], vec![y], vec![float("alpha", alpha)]);
            Ok(())
        }
        B::HARD_SWISH => {
            // x · relu6(x + 3) / 6, as x · HardSigmoid(x) with slope 1/6 and offset 1/2 (opset 13
            // has no HardSwish).
            let x = b.input(input(0)?)?;
            let gate = b.fresh("gate");
            b.node(
                "HardSigmoid",
                vec![x.clone()],
                vec![gate.clone()],
                vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
            );
            let y = b.names[output(0)?].clone();
            b.node("Mul", vec![x, gate], vec![y], vec![]);
            Ok(())
        }
        B::TRANSPOSE => {
            let x = input(0)?;
            let perm = b.constant_ints(input(1)?)?.ok_or("the permutation is not a constant")?;
            let rank = b.tensor(x).shape.len();
            let mut seen = vec![false; rank];
            for &p in &perm {
                match seen.get_mut(usize::try_from(p).unwrap_or(usize::MAX)) {
                    Some(s) if !*s => *s = true,
                    _ => return Err(format!("permutation {perm:?} of a rank-{rank} tensor")),
                }
            }
            if perm.len() != rank {
                return Err(format!("permutation {perm:?} of a rank-{rank} tensor"));
            }
            let xs = b.input(x)?;
            let y = b.names[output(0)?].clone();
            b.node("Transpose", vec![xs], vec![y], vec![ints("perm", perm)]);
            Ok(())
        }
        B::RESIZE_BILINEAR | B::RESIZE_NEAREST_NEIGHBOR => {
            let (x, y) = (input(0)?, output(0)?);
            let (align, half) = if code == B::RESIZE_BILINEAR {
                let o = raw.builtin_options_as_resize_bilinear_options();
                (o.is_some_and(|o| o.align_corners()), o.is_some_and(|o| o.half_pixel_centers()))
            } else {
                let o = raw.builtin_options_as_resize_nearest_neighbor_options();
                (o.is_some_and(|o| o.align_corners()), o.is_some_and(|o| o.half_pixel_centers()))
            };
            if b.tensor(x).shape.len() != 4 || b.tensor(y).shape.len() != 4 {
                return Err("input or output is not NHWC".into());
            }
            // The output's declared shape is the size input's value (checked by the converter);
            // ONNX resizes all four dimensions, N and C by 1.
            let sizes = b.tensor(y).shape.iter().map(|&d| d as i64).collect();
            let (mode, coordinates, nearest) = match (code == B::RESIZE_BILINEAR, align, half) {
                (_, true, true) => return Err("align_corners with half_pixel_centers".into()),
                (true, true, false) => ("linear", "align_corners", "floor"),
                (true, false, true) => ("linear", "half_pixel", "floor"),
                (true, false, false) => ("linear", "asymmetric", "floor"),
                (false, true, false) => ("nearest", "align_corners", "round_prefer_ceil"),
                (false, false, true) => ("nearest", "tf_half_pixel_for_nn", "floor"),
                (false, false, false) => ("nearest", "asymmetric", "floor"),
            };
            let xs = b.input(x)?;
            let sizes = b.const_i64("sizes", sizes);
            let out = b.names[y].clone();
            b.node(
                "Resize",
                vec![xs, String::new(), String::new(), sizes],
                vec![out],
                vec![
                    text("mode", mode),
                    text("coordinate_transformation_mode", coordinates),
                    text("nearest_mode", nearest),
                ],
            );
            Ok(())
        }
        B::SPLIT | B::SPLIT_V => {
            // SPLIT: (axis, input), equal parts; SPLIT_V: (input, sizes, axis).
            let (x, axis_at) = if code == B::SPLIT { (input(1)?, input(0)?) } else { (input(0)?, input(2)?) };
            let rank = b.tensor(x).shape.len() as i64;
            let axis = *b.constant_ints(axis_at)?.ok_or("the axis is not a constant")?.first().ok_or("no axis")?;
            let axis = if axis < 0 { axis + rank } else { axis };
            if !(0..rank).contains(&axis) {
                return Err(format!("axis {axis} of a rank-{rank} tensor"));
            }
            // The parts' sizes are the outputs' declared sizes along the axis.
            let parts: Vec<i64> =
                op.outputs.iter().map(|&o| b.tensor(o).shape.get(axis as usize).map_or(0, |&d| d as i64)).collect();
            if parts.iter().sum::<i64>() != b.tensor(x).shape[axis as usize] as i64 {
                return Err(format!("parts {parts:?} do not add up to the axis' {}", b.tensor(x).shape[axis as usize]));
            }
            let xs = b.input(x)?;
            let split = b.const_i64("split", parts);
            let outs = op.outputs.iter().map(|&o| b.names[o].clone()).collect();
            b.node("Split", vec![xs, split], outs, vec![int("axis", axis)]);
            Ok(())
        }
        B::PAD | B::PADV2 => {
            let x = input(0)?;
            let p = b.constant_ints(input(1)?)?.ok_or("the paddings are not a constant")?;
            let rank = b.tensor(x).shape.len();
            if p.len() != rank * 2 {
                return Err(format!("{} paddings for a tensor of rank {rank}", p.len()));
            }
            let onnx_pads: Vec<i64> = (0..rank).map(|d| p[d * 2]).chain((0..rank).map(|d| p[d * 2 + 1])).collect();
            let mut inputs = vec![b.input(x)?, b.const_i64("pads", onnx_pads)];
            if code == B::PADV2 {
                let v = b.constant_f32(input(2)?)?.ok_or("the padding value is not a constant")?;
                inputs.push(b.const_f32("pad_value", &[], vec![v.first().copied().unwrap_or(0.0)]));
            }
            let y = b.names[output(0)?].clone();
            b.node("Pad", inputs, vec![y], vec![]);
            Ok(())
        }
        B::RESHAPE | B::SQUEEZE | B::EXPAND_DIMS => {
            let (x, y) = (input(0)?, output(0)?);
            let shape = b.tensor(y).shape.iter().map(|&d| d as i64).collect();
            let inputs = vec![b.input(x)?, b.const_i64("shape", shape)];
            let name = b.names[y].clone();
            b.node("Reshape", inputs, vec![name], vec![]);
            Ok(())
        }
        B::CONCATENATION => {
            let o = raw.builtin_options_as_concatenation_options().ok_or("no ConcatenationOptions")?;
            let y = output(0)?;
            let rank = b.tensor(y).shape.len() as i64;
            let axis = if o.axis() < 0 { o.axis() as i64 + rank } else { o.axis() as i64 };
            let mut inputs = vec![];
            for i in op.inputs.iter() {
                inputs.push(b.input(i.ok_or("an input is missing")?)?);
            }
            let cat = b.fresh("concat");
            b.node("Concat", inputs, vec![cat.clone()], vec![int("axis", axis)]);
            activation(b, cat, y, o.fused_activation_function())
        }
        B::FULLY_CONNECTED => {
            let o = raw.builtin_options_as_fully_connected_options().ok_or("no FullyConnectedOptions")?;
            if o.weights_format() != schema::FullyConnectedOptionsWeightsFormat::DEFAULT {
                return Err("shuffled weights: not translated".into());
            }
            let (x, w, y) = (input(0)?, input(1)?, output(0)?);
            let ws = b.tensor(w).shape.clone();
            if ws.len() != 2 {
                return Err(format!("weights of shape {ws:?}, not [N, K]"));
            }
            let (n, k) = (ws[0], ws[1]);
            let weights = b.constant_f32(w)?.ok_or("the weights are not a constant")?;
            let mut kn = vec![0.0; weights.len()];
            for r in 0..n {
                for c in 0..k {
                    kn[c * n + r] = weights[r * k + c];
                }
            }
            let kn = b.const_f32("weights", &[k, n], kn);
            let flat = b.fresh("flat");
            let shape = b.const_i64("shape", vec![-1, k as i64]);
            let xs = b.input(x)?;
            b.node("Reshape", vec![xs, shape], vec![flat.clone()], vec![]);
            let mut acc = b.fresh("matmul");
            b.node("MatMul", vec![flat, kn], vec![acc.clone()], vec![]);
            if let Some(bias) = op.inputs.get(2).copied().flatten() {
                let bias = b.input(bias)?;
                let biased = b.fresh("biased");
                b.node("Add", vec![acc, bias], vec![biased.clone()], vec![]);
                acc = biased;
            }
            let shaped = b.fresh("shaped");
            let out_shape = b.tensor(y).shape.iter().map(|&d| d as i64).collect();
            let out_shape = b.const_i64("shape", out_shape);
            b.node("Reshape", vec![acc, out_shape], vec![shaped.clone()], vec![]);
            activation(b, shaped, y, o.fused_activation_function())
        }
        B::SOFTMAX => {
            let beta = raw.builtin_options_as_softmax_options().map_or(1.0, |o| o.beta());
            let mut x = b.input(input(0)?)?;
            if beta != 1.0 {
                let scaled = b.fresh("scaled");
                let beta = b.const_f32("beta", &[], vec![beta]);
                b.node("Mul", vec![x, beta], vec![scaled.clone()], vec![]);
                x = scaled;
            }
            let y = b.names[output(0)?].clone();
            b.node("Softmax", vec![x], vec![y], vec![int("axis", -1)]);
            Ok(())
        }
        B::MEAN => {
            let keep = raw.builtin_options_as_reducer_options().is_some_and(|o| o.keep_dims());
            let x = input(0)?;
            let rank = b.tensor(x).shape.len() as i64;
            let axes = b.constant_ints(input(1)?)?.ok_or("the axes are not a constant")?;
            let axes = axes.iter().map(|&a| if a < 0 { a + rank } else { a }).collect();
            let xs = b.input(x)?;
            let y = b.names[output(0)?].clone();
            b.node("ReduceMean", vec![xs], vec![y], vec![ints("axes", axes), int("keepdims", keep as i64)]);
            Ok(())
        }
        other => Err(format!("{}: not translated yet", other.variant_name().unwrap_or("an unknown builtin"))),
    }
}

/// Largest kernel size, stride or dilation accepted (a file's word, checked before arithmetic).
const MAX_WINDOW: i64 = 1 << 16;

/// A convolution of NHWC `x` by the NCHW-ordered `weight` constant, with bias input 2 if present.
#[allow(clippy::too_many_arguments)]
fn conv(
    b: &mut Builder<'_, '_>,
    op: &Operator<'_>,
    x: usize,
    weight: String,
    kernel: [usize; 2],
    group: usize,
    stride: (i32, i32),
    dilation: (i32, i32),
    padding: Padding,
    act: ActivationFunctionType,
) -> Result<(), String> {
    let y = op.outputs.first().copied().ok_or("output 0 is missing")?;
    let pads = pads(&b.tensor(x).shape, kernel, stride, dilation, padding)?;
    let xs = b.input(x)?;
    let nchw = transpose(b, xs, &[0, 3, 1, 2]);
    let mut inputs = vec![nchw, weight];
    if let Some(bias) = op.inputs.get(2).copied().flatten() {
        inputs.push(b.input(bias)?);
    }
    let conv = b.fresh("conv");
    let attrs = vec![
        ints("kernel_shape", kernel.iter().map(|&v| v as i64).collect()),
        ints("strides", vec![stride.0 as i64, stride.1 as i64]),
        ints("dilations", vec![dilation.0 as i64, dilation.1 as i64]),
        ints("pads", pads),
        int("group", group as i64),
    ];
    b.node("Conv", inputs, vec![conv.clone()], attrs);
    let nhwc = transpose(b, conv, &[0, 2, 3, 1]);
    activation(b, nhwc, y, act)
}

/// ONNX pads `[top, left, bottom, right]` for TFLite's SAME or VALID on NHWC `shape`: SAME puts
/// the odd pixel at the end, as TFLite does.
fn pads(
    shape: &[usize],
    kernel: [usize; 2],
    stride: (i32, i32),
    dilation: (i32, i32),
    padding: Padding,
) -> Result<Vec<i64>, String> {
    if shape.len() != 4 {
        return Err(format!("input of rank {}, not NHWC", shape.len()));
    }
    let fits = |v: i64| (1..=MAX_WINDOW).contains(&v);
    if ![stride.0, stride.1, dilation.0, dilation.1].iter().all(|&v| fits(v as i64))
        || !kernel.iter().all(|&k| fits(k as i64))
    {
        return Err(format!("kernel {kernel:?}, stride {stride:?} or dilation {dilation:?} outside 1..={MAX_WINDOW}"));
    }
    if padding == Padding::VALID {
        return Ok(vec![0; 4]);
    }
    if padding != Padding::SAME {
        return Err(format!("padding {}: not SAME or VALID", padding.0));
    }
    let one = |size: usize, k: usize, s: i32, d: i32| -> (i64, i64) {
        let (size, k, s, d) = (size as i64, k as i64, s as i64, d as i64);
        let out = (size + s - 1) / s;
        let total = ((out - 1) * s + (k - 1) * d + 1 - size).max(0);
        (total / 2, total - total / 2)
    };
    let (t, bottom) = one(shape[1], kernel[0], stride.0, dilation.0);
    let (l, r) = one(shape[2], kernel[1], stride.1, dilation.1);
    Ok(vec![t, l, bottom, r])
}

/// A Transpose node of `x` by `perm`; returns its output's name.
fn transpose(b: &mut Builder<'_, '_>, x: String, perm: &[i64]) -> String {
    let y = b.fresh("transposed");
    b.node("Transpose", vec![x], vec![y.clone()], vec![ints("perm", perm.to_vec())]);
    y
}

/// Applies a fused activation to `x`, writing TFLite tensor `y`.
fn activation(b: &mut Builder<'_, '_>, x: String, y: usize, act: ActivationFunctionType) -> Result<(), String> {
    let out = b.names[y].clone();
    let clip = |b: &mut Builder<'_, '_>, lo: f32, hi: f32| {
        let lo = b.const_f32("min", &[], vec![lo]);
        let hi = b.const_f32("max", &[], vec![hi]);
        b.node("Clip", vec![x.clone(), lo, hi], vec![out.clone()], vec![]);
    };
    match act {
        ActivationFunctionType::NONE => b.node("Identity", vec![x.clone()], vec![out.clone()], vec![]),
        ActivationFunctionType::RELU => b.node("Relu", vec![x.clone()], vec![out.clone()], vec![]),
        ActivationFunctionType::RELU6 => clip(b, 0.0, 6.0),
        ActivationFunctionType::RELU_N1_TO_1 => clip(b, -1.0, 1.0),
        ActivationFunctionType::TANH => b.node("Tanh", vec![x.clone()], vec![out.clone()], vec![]),
        other => return Err(format!("fused activation {}: not translated", other.variant_name().unwrap_or("unknown"))),
    }
    Ok(())
}

/// An attribute of type `kind`, its value set by `set`.
fn attribute(
    name: &str,
    kind: pb::attribute_proto::AttributeType,
    set: impl FnOnce(&mut pb::AttributeProto),
) -> pb::AttributeProto {
    let mut a = pb::AttributeProto { name: name.into(), r#type: kind as i32, ..Default::default() };
    set(&mut a);
    a
}

/// An integer-list attribute.
fn ints(name: &str, values: Vec<i64>) -> pb::AttributeProto {
    attribute(name, pb::attribute_proto::AttributeType::Ints, |a| a.ints = values)
}

/// A float attribute.
fn float(name: &str, value: f32) -> pb::AttributeProto {
    attribute(name, pb::attribute_proto::AttributeType::Float, |a| a.f = value)
}

/// A string attribute.
fn text(name: &str, value: &str) -> pb::AttributeProto {
    attribute(name, pb::attribute_proto::AttributeType::String, |a| a.s = value.as_bytes().to_vec())
}

/// An integer attribute.
fn int(name: &str, value: i64) -> pb::AttributeProto {
    attribute(name, pb::attribute_proto::AttributeType::Int, |a| a.i = value)
}
