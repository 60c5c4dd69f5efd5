//! Every optimized micro-engine kernel computes exactly what the reference kernel computes:
//! random convolutions (pointwise, strided/padded 3×3, depthwise 5×5 with asymmetric stride) and
//! fully connected layers, run with the portable reference and with every other kernel set this
//! CPU supports, must give identical bytes. A set the CPU cannot run is reported as skipped.

use lepton_core::engine::micro::format::{
    Binary, Conv, FullyConnected, Header, Layout, Op, Pool, TensorDesc, MAGIC, VERSION,
};
use lepton_core::engine::micro::host::MicroEngine;
use lepton_core::engine::micro::kernels::Isa;
use lepton_core::engine::Engine;
use lepton_core::quant::Requant;
use lepton_core::tensor::TensorDataMut;
use std::path::Path;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn i8(&mut self) -> u8 {
        (self.next() >> 8) as u8
    }
    /// A symmetric int8 weight, in [-127, 127].
    fn weight(&mut self) -> u8 {
        match self.i8() {
            0x80 => 0x81,
            w => w,
        }
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo) as u64) as i64
    }
}

fn desc(name: &str, shape: [u32; 4], zp: i32, offset: u32) -> TensorDesc<'_> {
    TensorDesc { name, shape, rank: 4, layout: Layout::Plain, scale: 0.05, zero_point: zp, channels: &[], offset }
}

fn tables(rng: &mut Rng, cout: usize, k: usize) -> (Vec<u8>, Vec<u8>) {
    let mut bias = vec![];
    let mut rq = vec![];
    for _ in 0..cout {
        bias.extend_from_slice(&(rng.range(-5000, 5000) as i32).to_le_bytes());
        // Accumulators of k products of uniform int8 values have a spread of about √k·5500:
        // map it to 40..120 so outputs cover the int8 range and saturate now and then.
        let q = Requant::from_real(rng.range(40, 120) as f64 / ((k as f64).sqrt() * 5500.0)).unwrap();
        rq.extend_from_slice(&q.multiplier.to_le_bytes());
        rq.push(q.shift);
    }
    (bias, rq)
}

fn encode(tensors: &[TensorDesc<'_>], op: Op<'_>, arena: u32) -> Vec<u8> {
    encode_io(tensors, op, arena, &[0], 1)
}

fn encode_io(tensors: &[TensorDesc<'_>], op: Op<'_>, arena: u32, inputs: &[u16], output: u16) -> Vec<u8> {
    encode_ops(tensors, &[op], arena, inputs, output)
}

/// Records that `set` was not tested because this CPU cannot run it: printed, and listed by
/// `scripts/test` at the end of the run (target/tmp/skipped/), so a skip never reads as a pass.
fn skipped(set: Isa) {
    let line = format!("kernel set {set}: not tested, this CPU lacks {}", set.requires());
    eprintln!("SKIPPED {line}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("micro_kernels-{set}.txt")), line + "\n");
}

/// Runs a one-op model with the reference kernels and with every other kernel set this CPU
/// supports; returns the reference output and each set's output.
fn run_sets(bytes: &[u8], rng: &mut Rng) -> (Vec<i8>, Vec<(Isa, Vec<i8>)>) {
    let mut engines = vec![];
    for isa in Isa::ALL {
        if isa.supported() {
            engines.push((isa, MicroEngine::with_isa(bytes.to_vec(), Path::new("case.lpm"), isa).unwrap()));
        } else {
            skipped(isa);
        }
    }
    let inputs: Vec<Vec<i8>> = engines[0]
        .1
        .inputs()
        .iter()
        .map(|i| (0..i.shape.iter().product::<usize>()).map(|_| rng.i8() as i8).collect())
        .collect();
    let mut outputs = vec![];
    for (isa, e) in &mut engines {
        for (k, input) in inputs.iter().enumerate() {
            if let TensorDataMut::I8(d) = e.input_mut(k).unwrap().data_mut() {
                d.copy_from_slice(input);
            }
        }
        e.run().unwrap();
        match e.output(0).unwrap().data() {
            lepton_core::tensor::TensorData::I8(d) => outputs.push((*isa, d.to_vec())),
            _ => unreachable!("micro outputs are int8"),
        }
    }
    let (_, reference) = outputs.remove(0);
    (reference, outputs)
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    seed: u64,
    [h, w, cin]: [u32; 3],
    cout: u32,
    kernel: [u16; 2],
    stride: [u16; 2],
    pad: [u16; 4],
    groups: u16,
) {
    let mut rng = Rng(seed);
    let oh = (h + pad[0] as u32 + pad[2] as u32 - kernel[0] as u32) / stride[0] as u32 + 1;
    let ow = (w + pad[1] as u32 + pad[3] as u32 - kernel[1] as u32) / stride[1] as u32 + 1;
    let cin_g = cin / groups as u32;
    let weights: Vec<u8> = (0..cout * kernel[0] as u32 * kernel[1] as u32 * cin_g).map(|_| rng.weight()).collect();
    let (bias, requant) = tables(&mut rng, cout as usize, (kernel[0] as u32 * kernel[1] as u32 * cin_g) as usize);
    let in_len = h * w * cin;
    let tensors = [
        desc("x", [1, h, w, cin], rng.range(-20, 20) as i32, 0),
        desc("y", [1, oh, ow, cout], rng.range(-20, 20) as i32, in_len.div_ceil(16) * 16),
    ];
    let op = Op::Conv(Conv {
        input: 0,
        output: 1,
        kernel,
        stride,
        dilation: [1, 1],
        pad,
        groups,
        weights: &weights,
        bias: &bias,
        requant: &requant,
        clamp: [-128, 127],
    });
    let bytes = encode(&tensors, op, in_len.div_ceil(16) * 16 + oh * ow * cout);
    let (r, sets) = run_sets(&bytes, &mut rng);
    for (isa, f) in sets {
        let differ = r.iter().zip(&f).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{isa}: {differ} of {} outputs differ for conv {h}x{w}x{cin}→{cout} k{kernel:?} s{stride:?} p{pad:?} g{groups}", r.len());
    }
    // The outputs use the whole int8 range: the case exercises saturation too.
    assert!(r.iter().any(|&v| v > 60) && r.iter().any(|&v| v < -60), "degenerate case: {:?}", &r[..r.len().min(16)]);
}

#[test]
fn pointwise_convolutions_match_the_reference() {
    conv_case(1, [5, 7, 13], 37, [1, 1], [1, 1], [0; 4], 1);
    conv_case(2, [3, 96, 200], 32, [1, 1], [1, 1], [0; 4], 1);
    conv_case(3, [1, 1, 88], 22, [1, 1], [1, 1], [0; 4], 1);
}

#[test]
fn strided_padded_convolutions_match_the_reference() {
    conv_case(4, [48, 64, 3], 8, [3, 3], [2, 2], [1, 1, 1, 1], 1);
    conv_case(5, [9, 11, 6], 20, [3, 5], [1, 2], [2, 1, 0, 2], 1);
}

#[test]
fn depthwise_convolutions_match_the_reference() {
    conv_case(6, [6, 96, 40], 40, [5, 5], [2, 1], [2, 2, 2, 2], 40);
    conv_case(7, [12, 20, 8], 8, [3, 3], [2, 1], [1, 1, 1, 1], 8);
    conv_case(8, [7, 9, 200], 200, [5, 5], [1, 1], [2, 2, 2, 2], 200);
}

#[test]
fn fully_connected_layers_match_the_reference() {
    for (seed, cin, cout) in [(9u64, 200u32, 2u32), (10, 33, 50), (11, 1024, 17)] {
        let mut rng = Rng(seed);
        let weights: Vec<u8> = (0..cin * cout).map(|_| rng.weight()).collect();
        let (bias, requant) = tables(&mut rng, cout as usize, cin as usize);
        let tensors = [desc("x", [1, 1, 1, cin], 3, 0), desc("y", [1, 1, 1, cout], -5, cin.div_ceil(16) * 16)];
        let op = Op::FullyConnected(FullyConnected {
            input: 0,
            output: 1,
            weights: &weights,
            bias: &bias,
            requant: &requant,
            clamp: [-128, 127],
        });
        let bytes = encode(&tensors, op, cin.div_ceil(16) * 16 + cout);
        let (r, sets) = run_sets(&bytes, &mut rng);
        for (isa, f) in sets {
            assert_eq!(r, f, "{isa}: fully connected {cin}→{cout}");
        }
    }
}

#[test]
fn tables_adds_multiplies_and_pools_match_the_reference() {
    let mut rng = Rng(12);
    let shape = [1u32, 5, 9, 37];
    let len = 5 * 9 * 37u32;
    let off = |k: u32| k * len.div_ceil(16) * 16;
    // Table: an arbitrary permutation-like mapping.
    let table: Vec<u8> = (0..256u32).map(|v| (v.wrapping_mul(97) ^ 0x5a) as u8).collect();
    let tensors = [desc("x", shape, 0, off(0)), desc("y", shape, 0, off(1))];
    let bytes = encode(&tensors, Op::Lut { input: 0, output: 1, table: &table }, off(2));
    let (r, sets) = run_sets(&bytes, &mut rng);
    for (isa, f) in sets {
        assert_eq!(r, f, "{isa}: table lookup");
    }
    // Add and multiply, same shape and per-channel broadcast.
    for (mul, per_channel) in [(false, false), (true, false), (false, true), (true, true)] {
        let bshape = if per_channel { [1, 1, 1, 37] } else { shape };
        let tensors = [desc("a", shape, 7, off(0)), desc("b", bshape, -9, off(1)), desc("y", shape, 3, off(2))];
        let ma = Requant::from_real(if mul { 0.004 } else { 0.7 }).unwrap();
        let mb =
            Requant { multiplier: (ma.multiplier as f64 * 0.6) as i32 * if mul { 1 } else { -1 }, shift: ma.shift };
        let op = Binary { a: 0, b: 1, output: 2, ma, mb, clamp: [-128, 127] };
        let op = if mul { Op::Mul(op) } else { Op::Add(op) };
        let bytes = encode_io(&tensors, op, off(3), &[0, 1], 2);
        let (r, sets) = run_sets(&bytes, &mut rng);
        for (isa, f) in sets {
            assert_eq!(r, f, "{isa}: mul {mul}, per-channel {per_channel}");
        }
    }
    // Global average and max pooling.
    let tensors = [desc("x", shape, 11, off(0)), desc("y", [1, 1, 1, 37], -4, off(1))];
    let op = Op::GlobalAvgPool { input: 0, output: 1, requant: Requant::from_real(0.9 / 45.0).unwrap() };
    let (r, sets) = run_sets(&encode(&tensors, op, off(2)), &mut rng);
    for (isa, f) in sets {
        assert_eq!(r, f, "{isa}: global average");
    }
    let tensors = [desc("x", shape, 11, off(0)), desc("y", [1, 3, 5, 37], -4, off(1))];
    let op = Op::MaxPool(Pool {
        input: 0,
        output: 1,
        kernel: [3, 3],
        stride: [2, 2],
        pad: [1, 1, 1, 1],
        count_include_pad: false,
        requant: Requant::from_real(0.8).unwrap(),
    });
    let (r, sets) = run_sets(&encode(&tensors, op, off(2)), &mut rng);
    for (isa, f) in sets {
        assert_eq!(r, f, "{isa}: max pooling");
    }
}

/// A tensor description quantized per channel (`channels` holds (scale, zero point) pairs).
fn per_channel<'a>(name: &'a str, shape: [u32; 4], channels: &'a [u8], offset: u32) -> TensorDesc<'a> {
    TensorDesc { name, shape, rank: 3, layout: Layout::ChannelsLast, scale: 1.0, zero_point: 0, channels, offset }
}

fn load(bytes: Vec<u8>) -> Result<MicroEngine, String> {
    MicroEngine::with_isa(bytes, Path::new("case.lpm"), Isa::Reference).map_err(|e| e.to_string())
}

#[test]
fn an_output_quantized_per_channel_dequantizes_each_channel_with_its_scale() {
    // Two positions; channels 0..2 from `a` (scale 0.5, zero point 4), channel 2 from `b` (0.01, -128).
    let quant: Vec<u8> = [(0.5f32, 4i32), (0.5, 4), (0.01, -128)]
        .iter()
        .flat_map(|(s, z)| s.to_le_bytes().into_iter().chain(z.to_le_bytes()))
        .collect();
    let mut a = desc("a", [1, 1, 2, 2], 4, 0);
    a.scale = 0.5;
    a.layout = Layout::ChannelsLast;
    let mut b = desc("b", [1, 1, 2, 1], -128, 16);
    b.scale = 0.01;
    b.layout = Layout::ChannelsLast;
    let tensors = [a, b, per_channel("y", [1, 1, 2, 3], &quant, 32)];
    let ids: Vec<u8> = [0u16, 1].iter().flat_map(|i| i.to_le_bytes()).collect();
    let mut e = load(encode_io(&tensors, Op::Concat { inputs: &ids, output: 2 }, 48, &[0, 1], 2)).unwrap();
    assert_eq!(e.outputs()[0].shape, [1, 2, 3], "channels-last: ONNX [N, positions, channels]");
    assert_eq!(e.outputs()[0].quant, None, "no single scale");
    for (k, values) in [[14i8, 2, 24, 0], [-28, 72, 0, 0]].iter().enumerate() {
        if let TensorDataMut::I8(d) = e.input_mut(k).unwrap().data_mut() {
            d.copy_from_slice(&values[..d.len()]);
        }
    }
    e.run().unwrap();
    let out = e.output(0).unwrap();
    let real: Vec<f32> = (0..out.len()).map(|i| out.real(i)).collect();
    // a = [14, 2 | 24, 0] → (v - 4)·0.5; b = [-28 | 72] → (v + 128)·0.01.
    let want = [5.0, -1.0, 1.0, 10.0, -2.0, 2.0];
    assert!(real.iter().zip(want).all(|(r, w)| (r - w).abs() < 1e-5), "{real:?}");
}

#[test]
fn inconsistent_slices_concatenations_and_constants_are_refused_naming_the_op() {
    let quant: Vec<u8> = [(0.5f32, 4i32), (0.02, 0)]
        .iter()
        .flat_map(|(s, z)| s.to_le_bytes().into_iter().chain(z.to_le_bytes()))
        .collect();
    let ids: Vec<u8> = [0u16, 1].iter().flat_map(|i| i.to_le_bytes()).collect();
    // A concatenation input quantized otherwise than its output channels.
    let tensors =
        [desc("a", [1, 1, 2, 1], 4, 0), desc("b", [1, 1, 2, 1], 0, 16), per_channel("y", [1, 1, 2, 2], &quant, 32)];
    let err = load(encode_io(&tensors, Op::Concat { inputs: &ids, output: 2 }, 48, &[0, 1], 2)).unwrap_err();
    assert!(err.contains("op 0") && err.contains("quantized differently"), "{err}");
    // A per-channel tensor read by a table.
    let table = [0u8; 256];
    let tensors = [per_channel("x", [1, 1, 2, 2], &quant, 0), desc("y", [1, 1, 2, 2], 0, 16)];
    let err = load(encode(&tensors, Op::Lut { input: 0, output: 1, table: &table }, 32)).unwrap_err();
    assert!(err.contains("per-channel quantized tensor"), "{err}");
    // A per-channel description of the wrong size.
    let tensors = [desc("x", [1, 1, 2, 3], 0, 0), per_channel("y", [1, 1, 2, 3], &quant, 16)];
    let err = load(encode(&tensors, Op::Copy { input: 0, output: 1 }, 32)).unwrap_err();
    assert!(err.contains("tensor 1") && err.contains("8 bytes per channel"), "{err}");
    // Slices past the input's channels, or changing N, H, W or the quantization.
    let tensors = [desc("x", [1, 2, 2, 5], 0, 0), desc("y", [1, 2, 2, 3], 0, 32)];
    let err = load(encode(&tensors, Op::Slice { input: 0, output: 1, begin: 3 }, 48)).unwrap_err();
    assert!(err.contains("op 0") && err.contains("past the input's"), "{err}");
    let tensors = [desc("x", [1, 2, 2, 5], 0, 0), desc("y", [1, 2, 1, 3], 0, 32)];
    let err = load(encode(&tensors, Op::Slice { input: 0, output: 1, begin: 0 }, 48)).unwrap_err();
    assert!(err.contains("keeps N, H and W"), "{err}");
    let tensors = [desc("x", [1, 2, 2, 5], 0, 0), desc("y", [1, 2, 2, 3], 1, 32)];
    let err = load(encode(&tensors, Op::Slice { input: 0, output: 1, begin: 0 }, 48)).unwrap_err();
    assert!(err.contains("keeps the quantization"), "{err}");
    // Constant data of the wrong size.
    let tensors = [desc("x", [1, 1, 1, 4], 0, 0), desc("y", [1, 1, 1, 4], 0, 16)];
    let err = load(encode(&tensors, Op::Const { output: 1, data: &[1, 2, 3] }, 32)).unwrap_err();
    assert!(err.contains("constant data size"), "{err}");
    // A file of the previous format version.
    let mut bytes = encode(&tensors, Op::Const { output: 1, data: &[1, 2, 3, 4] }, 32);
    assert!(load(bytes.clone()).is_ok());
    bytes[4] = 1;
    let err = load(bytes).unwrap_err();
    assert!(err.contains("format version 1"), "{err}");
}

/// Output 0 of a micro engine.
fn i8s(e: &MicroEngine) -> Vec<i8> {
    match e.output(0).unwrap().data() {
        lepton_core::tensor::TensorData::I8(d) => d.to_vec(),
        _ => unreachable!("micro outputs are int8"),
    }
}

fn encode_ops(tensors: &[TensorDesc<'_>], ops: &[Op<'_>], arena: u32, inputs: &[u16], output: u16) -> Vec<u8> {
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        arena_bytes: arena,
        tensor_count: tensors.len() as u16,
        op_count: ops.len() as u16,
        inputs: inputs.iter().copied().collect(),
        outputs: [output].into_iter().collect(),
        manifest: "",
    };
    let mut bytes = postcard::to_stdvec(&header).unwrap();
    for t in tensors {
        bytes.extend(postcard::to_stdvec(t).unwrap());
    }
    for op in ops {
        bytes.extend(postcard::to_stdvec(op).unwrap());
    }
    bytes
}

/// A fully connected layer whose requantization table carries the TFLite flag computes TFLite's
/// rounding (`Requant::apply_tflite`) on every kernel set, and that differs from rounding halves
/// up on some outputs (the flag is not ignored).
#[test]
fn tflite_rounding_is_computed_on_every_set() {
    use lepton_core::engine::micro::format::TFLITE_ROUNDING;
    let mut rng = Rng(41);
    let (cin, cout, rows) = (64usize, 48usize, 6usize);
    let weights: Vec<u8> = (0..cin * cout).map(|_| rng.weight()).collect();
    let (bias, mut rq) = tables(&mut rng, cout, cin);
    let plain = rq.clone();
    for c in 0..cout {
        rq[c * 5 + 4] |= TFLITE_ROUNDING;
    }
    let tensors =
        [desc("x", [rows as u32, 1, 1, cin as u32], -3, 0), desc("y", [rows as u32, 1, 1, cout as u32], 5, 512)];
    let fc = |requant| {
        Op::FullyConnected(FullyConnected {
            input: 0,
            output: 1,
            weights: &weights,
            bias: &bias,
            requant,
            clamp: [-128, 127],
        })
    };
    let x: Vec<i8> = (0..rows * cin).map(|_| rng.i8() as i8).collect();
    let mut expected = vec![];
    let (mut tflite_only, mut differ) = (vec![], 0);
    for r in 0..rows {
        for c in 0..cout {
            let mut acc = i32::from_le_bytes(bias[c * 4..c * 4 + 4].try_into().unwrap()) as i64;
            for i in 0..cin {
                acc += (x[r * cin + i] as i64 + 3) * weights[c * cin + i] as i8 as i64;
            }
            let q = Requant {
                multiplier: i32::from_le_bytes(rq[c * 5..c * 5 + 4].try_into().unwrap()),
                shift: plain[c * 5 + 4],
            };
            let v = |r: i64| (r + 5).clamp(-128, 127) as i8;
            expected.push(v(q.apply_tflite(acc)));
            tflite_only.push(v(q.apply(acc)));
            differ += usize::from(q.apply(acc) != q.apply_tflite(acc));
        }
    }
    assert!(differ > 0, "the case has outputs where the two roundings differ");
    for (requant, want) in [(&rq, &expected), (&plain, &tflite_only)] {
        let bytes = encode(&tensors, fc(requant), 1024);
        for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
            let mut e = MicroEngine::with_isa(bytes.clone(), Path::new("tflite.lpm"), isa).unwrap();
            if let TensorDataMut::I8(d) = e.input_mut(0).unwrap().data_mut() {
                d.copy_from_slice(&x);
            }
            let steps = e.run_profiled();
            // Sets that compute TFLite's rounding run it in their own kernel, the others fall back.
            let own = isa != Isa::Reference && (isa.rounds_like_tflite() || requant[4] & TFLITE_ROUNDING == 0);
            assert_eq!(steps[0].1 == "gemm", own, "{isa}: {:?}", steps[0]);
            let got = i8s(&e);
            assert_eq!(&got, want, "{isa}: flagged {}", requant[4] & TFLITE_ROUNDING != 0);
        }
    }
}

/// A `Variable` keeps its value from one run to the next and takes its initial value on load and
/// on reset: a model that outputs its state, then stores its input there, gives the previous
/// run's input.
#[test]
fn state_is_kept_between_runs_and_reset_restores_it() {
    let init = [1u8, 2, 3, 4];
    let tensors = [desc("x", [1, 1, 1, 4], 0, 0), desc("state", [1, 1, 1, 4], 0, 16), desc("y", [1, 1, 1, 4], 0, 32)];
    let ops =
        [Op::Variable { output: 1, init: &init }, Op::Copy { input: 1, output: 2 }, Op::Copy { input: 0, output: 1 }];
    let bytes = encode_ops(&tensors, &ops, 48, &[0], 2);
    let mut e = MicroEngine::from_bytes(bytes, Path::new("state.lpm")).unwrap();
    assert!(e.interpreter().has_state());
    let step = |e: &mut MicroEngine, x: [i8; 4]| -> Vec<i8> {
        if let TensorDataMut::I8(d) = e.input_mut(0).unwrap().data_mut() {
            d.copy_from_slice(&x);
        }
        e.run().unwrap();
        i8s(e)
    };
    assert_eq!(step(&mut e, [9, 9, 9, 9]), [1, 2, 3, 4], "the initial state");
    assert_eq!(step(&mut e, [7, 7, 7, 7]), [9, 9, 9, 9], "the previous run's input");
    assert_eq!(step(&mut e, [5, 5, 5, 5]), [7, 7, 7, 7]);
    e.reset().unwrap();
    assert_eq!(step(&mut e, [0, 0, 0, 0]), [1, 2, 3, 4], "reset restores the initial state");
    // A wrong-sized initial value is refused on load.
    let bad = encode_ops(&tensors, &[Op::Variable { output: 1, init: &init[..3] }], 48, &[0], 2);
    let err = MicroEngine::from_bytes(bad, Path::new("bad.lpm")).unwrap_err().to_string();
    assert!(err.contains("initial value"), "{err}");
}
