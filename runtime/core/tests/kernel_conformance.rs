//! The kernel sets' conformance suite: every set this CPU runs must compute, bit for bit, what the
//! reference kernels compute, on randomized one-op models (proptest): shapes and channel counts
//! that are not multiples of any vector width, strides, dilations, padding, extreme zero points,
//! multipliers and shifts that push results past the 32-bit range (saturation), clamps. A set the
//! CPU cannot run is reported as skipped by name (target/tmp/skipped/), never passed silently.
//! Named regression cases live in tests/micro_kernels.rs.

use lepton_core::engine::micro::format::{
    Binary, Conv, FullyConnected, Header, Layout, Op, Pool, TensorDesc, MAGIC, VERSION,
};
use lepton_core::engine::micro::host::MicroEngine;
use lepton_core::engine::micro::kernels::Isa;
use lepton_core::engine::Engine;
use lepton_core::quant::Requant;
use lepton_core::tensor::TensorDataMut;
use proptest::prelude::*;
use std::path::Path;

/// Records a set this CPU cannot run, once per test binary run.
fn skipped(set: Isa) {
    let line = format!("kernel set {set}: conformance not tested, this CPU lacks {}", set.requires());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped");
    let file = dir.join(format!("kernel_conformance-{set}.txt"));
    if !file.exists() {
        eprintln!("SKIPPED {line}");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(file, line + "\n");
    }
}

fn desc(name: &str, shape: [u32; 4], zero_point: i32, offset: u32) -> TensorDesc<'_> {
    TensorDesc { name, shape, rank: 4, layout: Layout::Plain, scale: 0.05, zero_point, channels: &[], offset }
}

/// Tensors laid out one after the other (16-byte aligned), and the arena size.
fn layout<'a>(tensors: &[(&'a str, [u32; 4], i32)]) -> (Vec<TensorDesc<'a>>, u32) {
    let mut offset = 0u32;
    let descs = tensors
        .iter()
        .map(|&(name, shape, zp)| {
            let d = desc(name, shape, zp, offset);
            offset += (d.len() as u32).div_ceil(16) * 16;
            d
        })
        .collect();
    (descs, offset)
}

fn encode(tensors: &[TensorDesc<'_>], op: Op<'_>, arena: u32, inputs: &[u16], output: u16) -> Vec<u8> {
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        arena_bytes: arena,
        tensor_count: tensors.len() as u16,
        op_count: 1,
        inputs: inputs.iter().copied().collect(),
        outputs: [output].into_iter().collect(),
        manifest: "",
    };
    let mut bytes = postcard::to_stdvec(&header).unwrap();
    for t in tensors {
        bytes.extend(postcard::to_stdvec(t).unwrap());
    }
    bytes.extend(postcard::to_stdvec(&op).unwrap());
    bytes
}

/// Prints, once per run, which sets this CPU runs (tests/tests/kernels_arm.rs reads it under
/// emulation).
fn announce() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let sets: Vec<&str> = Isa::ALL.into_iter().filter(|i| i.supported()).map(Isa::name).collect();
        eprintln!("kernel sets tested: {}", sets.join(", "));
    });
}

/// Runs the model with every set this CPU supports on `inputs`; any difference from the
/// reference fails with the set and the first differing output. Returns the reference output.
fn conform(what: &str, bytes: &[u8], inputs: &[Vec<u8>]) -> Result<Vec<u8>, TestCaseError> {
    announce();
    let run = |isa: Isa| -> Vec<u8> {
        let mut e = MicroEngine::with_isa(bytes.to_vec(), Path::new("case.lpm"), isa)
            .unwrap_or_else(|err| panic!("{what}: the case does not load: {err}"));
        for (k, input) in inputs.iter().enumerate() {
            if let TensorDataMut::I8(d) = e.input_mut(k).unwrap().data_mut() {
                d.iter_mut().zip(input).for_each(|(d, &s)| *d = s as i8);
            }
        }
        e.run().unwrap();
        match e.output(0).unwrap().data() {
            lepton_core::tensor::TensorData::I8(d) => d.iter().map(|&v| v as u8).collect(),
            _ => unreachable!("micro outputs are int8"),
        }
    };
    let reference = run(Isa::Reference);
    for isa in Isa::ALL.into_iter().skip(1) {
        if !isa.supported() {
            skipped(isa);
            continue;
        }
        let got = run(isa);
        if let Some(i) = (0..reference.len()).find(|&i| got[i] != reference[i]) {
            return Err(TestCaseError::fail(format!(
                "{isa}: {what}: output {i} is {} where the reference gives {} ({} of {} differ)",
                got[i] as i8,
                reference[i] as i8,
                (0..reference.len()).filter(|&i| got[i] != reference[i]).count(),
                reference.len()
            )));
        }
    }
    Ok(reference)
}

/// A zero point: the ends of int8 often, anything else otherwise.
fn zero_point() -> impl Strategy<Value = i32> {
    prop_oneof![Just(-128), Just(127), Just(0), -128i32..=127]
}

/// A realistic requantization step: outputs spread over int8 (a multiplier below 1: shift ≥ 31).
fn realistic(k: usize) -> impl Strategy<Value = Requant> {
    let spread = (k.max(1) as f64).sqrt() * 5500.0;
    (20.0f64..150.0).prop_map(move |t| Requant::from_real(t / spread).unwrap())
}

/// A requantization step: realistic, or with a small shift that pushes values far past the
/// 32-bit range (everything saturates).
fn requant(k: usize) -> impl Strategy<Value = Requant> {
    prop_oneof![
        3 => realistic(k),
        1 => ((1i64 << 30)..(1i64 << 31), 1u8..=12).prop_map(|(m, s)| Requant { multiplier: m as i32, shift: s }),
        1 => ((1i64 << 30)..(1i64 << 31), 31u8..=33).prop_map(|(m, s)| Requant { multiplier: m as i32, shift: s }),
    ]
}

/// An output clamp: full, ReLU-like, or any ordered pair.
fn clamp() -> impl Strategy<Value = [i8; 2]> {
    prop_oneof![
        Just([-128, 127]),
        (-128i8..=0).prop_map(|lo| [lo, 127]),
        (any::<i8>(), any::<i8>()).prop_map(|(a, b)| [a.min(b), a.max(b)]),
    ]
}

fn bytes(n: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), n)
}

/// Int8 weights, symmetric: [-127, 127] (a model with -128 is refused when it loads).
fn weights(n: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((-127i8..=127).prop_map(|w| w as u8), n)
}

/// Per-channel bias (i32 LE) and requantization (i32 LE + shift) tables.
fn tables(cout: usize, k: usize) -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    // Every channel realistic (kernels may take their narrow path), every channel at the edge of
    // the 32-bit path (shifts 32 and 33, large multipliers), or some past 32 bits.
    let edge = ((1i64 << 30)..(1i64 << 31), 32u8..=33).prop_map(|(m, s)| Requant { multiplier: m as i32, shift: s });
    let steps = prop_oneof![
        proptest::collection::vec(realistic(k), cout).boxed(),
        proptest::collection::vec(edge, cout).boxed(),
        proptest::collection::vec(requant(k), cout).boxed(),
    ];
    (proptest::collection::vec(-(1i32 << 18)..(1 << 18), cout), steps).prop_map(|(bias, rq)| {
        let b = bias.iter().flat_map(|v| v.to_le_bytes()).collect();
        let r = rq.iter().flat_map(|q| q.multiplier.to_le_bytes().into_iter().chain([q.shift])).collect();
        (b, r)
    })
}

#[derive(Debug, Clone)]
struct ConvProblem {
    input: [u32; 3],
    cout: u32,
    kernel: [u16; 2],
    stride: [u16; 2],
    dilation: [u16; 2],
    pad: [u16; 4],
    groups: u16,
    zx: i32,
    zy: i32,
    weights: Vec<u8>,
    bias: Vec<u8>,
    requant: Vec<u8>,
    clamp: [i8; 2],
    x: Vec<u8>,
}

fn out_size(i: u32, k: u16, s: u16, d: u16, a: u16, b: u16) -> Option<u32> {
    lepton_core::engine::micro::ops::conv::out_size(i, k, s, d, a, b)
}

fn conv_problem() -> impl Strategy<Value = ConvProblem> {
    let geometry = (
        any::<bool>(),
        1u32..10,
        1u32..12,
        // Input channels: any, or whole and half vector widths (kernels take other paths there).
        prop_oneof![3 => 1u32..40, 1 => proptest::sample::select(vec![8u32, 16, 24, 32, 40])],
        1u32..40,
        (1u16..=5, 1u16..=5),
        (1u16..=2, 1u16..=2),
        (1u16..=2, 1u16..=2),
        (0u16..=2, 0u16..=2, 0u16..=2, 0u16..=2),
    );
    geometry
        .prop_filter("the output has at least one position", |&(_, h, w, _, _, k, s, d, p)| {
            out_size(h, k.0, s.0, d.0, p.0, p.2).is_some() && out_size(w, k.1, s.1, d.1, p.1, p.3).is_some()
        })
        .prop_flat_map(|(depthwise, h, w, cin, cout, k, s, d, p)| {
            let (cout, groups) = if depthwise { (cin, cin as u16) } else { (cout, 1) };
            let per = k.0 as usize * k.1 as usize * (cin / groups as u32) as usize;
            (
                weights(cout as usize * per),
                tables(cout as usize, per),
                zero_point(),
                zero_point(),
                clamp(),
                bytes((h * w * cin) as usize),
            )
                .prop_map(move |(weights, (bias, requant), zx, zy, clamp, x)| ConvProblem {
                    input: [h, w, cin],
                    cout,
                    kernel: [k.0, k.1],
                    stride: [s.0, s.1],
                    dilation: [d.0, d.1],
                    pad: [p.0, p.1, p.2, p.3],
                    groups,
                    zx,
                    zy,
                    weights,
                    bias,
                    requant,
                    clamp,
                    x,
                })
        })
}

#[derive(Debug, Clone)]
struct FcProblem {
    n: u32,
    cin: u32,
    cout: u32,
    zx: i32,
    zy: i32,
    weights: Vec<u8>,
    bias: Vec<u8>,
    requant: Vec<u8>,
    clamp: [i8; 2],
    x: Vec<u8>,
}

fn fc_problem() -> impl Strategy<Value = FcProblem> {
    (1u32..4, 1u32..300, 1u32..40).prop_flat_map(|(n, cin, cout)| {
        (
            weights((cin * cout) as usize),
            tables(cout as usize, cin as usize),
            zero_point(),
            zero_point(),
            clamp(),
            bytes((n * cin) as usize),
        )
            .prop_map(move |(weights, (bias, requant), zx, zy, clamp, x)| FcProblem {
                n,
                cin,
                cout,
                zx,
                zy,
                weights,
                bias,
                requant,
                clamp,
                x,
            })
    })
}

#[derive(Debug, Clone)]
struct BinaryProblem {
    mul: bool,
    per_channel: bool,
    shape: [u32; 4],
    zero_points: [i32; 3],
    ma: Requant,
    mb: Requant,
    clamp: [i8; 2],
    a: Vec<u8>,
    b: Vec<u8>,
}

fn binary_problem() -> impl Strategy<Value = BinaryProblem> {
    (any::<bool>(), any::<bool>(), 1u32..4, 1u32..6, 1u32..40).prop_flat_map(|(mul, per_channel, h, w, c)| {
        let len = (h * w * c) as usize;
        (
            (zero_point(), zero_point(), zero_point()),
            requant(1),
            (-(1i64 << 31) + 1..(1i64 << 31)),
            clamp(),
            bytes(len),
            bytes(if per_channel { c as usize } else { len }),
        )
            .prop_map(move |((za, zb, zy), ma, mb, clamp, a, b)| BinaryProblem {
                mul,
                per_channel,
                shape: [1, h, w, c],
                zero_points: [za, zb, zy],
                ma,
                // An add's second multiplier shares the first one's shift.
                mb: Requant { multiplier: mb as i32, shift: ma.shift },
                clamp,
                a,
                b,
            })
    })
}

#[derive(Debug, Clone)]
struct PoolProblem {
    shape: [u32; 4],
    kernel: [u16; 2],
    stride: [u16; 2],
    pad: [u16; 4],
    zx: i32,
    zy: i32,
    requant: Requant,
    x: Vec<u8>,
}

fn pool_problem() -> impl Strategy<Value = PoolProblem> {
    (
        1u32..3,
        1u32..9,
        1u32..9,
        1u32..40,
        (1u16..=4, 1u16..=4),
        (1u16..=3, 1u16..=3),
        (0u16..=1, 0u16..=1, 0u16..=1, 0u16..=1),
    )
        .prop_filter("the window fits", |&(_, h, w, _, k, s, p)| {
            out_size(h, k.0, s.0, 1, p.0, p.2).is_some()
                && out_size(w, k.1, s.1, 1, p.1, p.3).is_some()
                && p.0 < k.0
                && p.2 < k.0
                && p.1 < k.1
                && p.3 < k.1
        })
        .prop_flat_map(|(n, h, w, c, k, s, p)| {
            (zero_point(), zero_point(), requant(1), bytes((n * h * w * c) as usize)).prop_map(
                move |(zx, zy, requant, x)| PoolProblem {
                    shape: [n, h, w, c],
                    kernel: [k.0, k.1],
                    stride: [s.0, s.1],
                    pad: [p.0, p.1, p.2, p.3],
                    zx,
                    zy,
                    requant,
                    x,
                },
            )
        })
}

#[derive(Debug, Clone)]
struct LayoutProblem {
    shape: [u32; 4],
    begin: u16,
    count: u32,
    zx: i32,
    zb: i32,
    scale_b: f32,
    x: Vec<u8>,
}

fn layout_problem() -> impl Strategy<Value = LayoutProblem> {
    (1u32..3, 1u32..6, 1u32..9, 1u32..40).prop_flat_map(|(n, h, w, c)| (Just([n, h, w, c]), 0..c)).prop_flat_map(
        |(shape, begin)| {
            let len = shape.iter().product::<u32>() as usize;
            (1..=shape[3] - begin, zero_point(), zero_point(), 0.001f32..10.0, bytes(len)).prop_map(
                move |(count, zx, zb, scale_b, x)| LayoutProblem {
                    shape,
                    begin: begin as u16,
                    count,
                    zx,
                    zb,
                    scale_b,
                    x,
                },
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn convolutions_regular_and_depthwise_match_the_reference(p in conv_problem()) {
        let [h, w, cin] = p.input;
        let oh = out_size(h, p.kernel[0], p.stride[0], p.dilation[0], p.pad[0], p.pad[2]).unwrap();
        let ow = out_size(w, p.kernel[1], p.stride[1], p.dilation[1], p.pad[1], p.pad[3]).unwrap();
        let (tensors, arena) = layout(&[("x", [1, h, w, cin], p.zx), ("y", [1, oh, ow, p.cout], p.zy)]);
        let op = Op::Conv(Conv {
            input: 0,
            output: 1,
            kernel: p.kernel,
            stride: p.stride,
            dilation: p.dilation,
            pad: p.pad,
            groups: p.groups,
            weights: &p.weights,
            bias: &p.bias,
            requant: &p.requant,
            clamp: p.clamp,
        });
        conform("conv", &encode(&tensors, op, arena, &[0], 1), std::slice::from_ref(&p.x))?;
    }

    #[test]
    fn fully_connected_layers_match_the_reference(p in fc_problem()) {
        let (tensors, arena) = layout(&[("x", [p.n, 1, 1, p.cin], p.zx), ("y", [p.n, 1, 1, p.cout], p.zy)]);
        let op = Op::FullyConnected(FullyConnected {
            input: 0,
            output: 1,
            weights: &p.weights,
            bias: &p.bias,
            requant: &p.requant,
            clamp: p.clamp,
        });
        conform("fully connected", &encode(&tensors, op, arena, &[0], 1), std::slice::from_ref(&p.x))?;
    }

    #[test]
    fn adds_and_multiplies_match_the_reference(p in binary_problem()) {
        let [za, zb, zy] = p.zero_points;
        let bshape = if p.per_channel { [1, 1, 1, p.shape[3]] } else { p.shape };
        let (tensors, arena) = layout(&[("a", p.shape, za), ("b", bshape, zb), ("y", p.shape, zy)]);
        let b = Binary { a: 0, b: 1, output: 2, ma: p.ma, mb: p.mb, clamp: p.clamp };
        let op = if p.mul { Op::Mul(b) } else { Op::Add(b) };
        conform("binary", &encode(&tensors, op, arena, &[0, 1], 2), &[p.a.clone(), p.b.clone()])?;
    }

    #[test]
    fn pooling_matches_the_reference(p in pool_problem()) {
        let [n, h, w, c] = p.shape;
        let oh = out_size(h, p.kernel[0], p.stride[0], 1, p.pad[0], p.pad[2]).unwrap();
        let ow = out_size(w, p.kernel[1], p.stride[1], 1, p.pad[1], p.pad[3]).unwrap();
        let (tensors, arena) = layout(&[("x", p.shape, p.zx), ("y", [n, oh, ow, c], p.zy)]);
        let pool = Pool { input: 0, output: 1, kernel: p.kernel, stride: p.stride, pad: p.pad, count_include_pad: false, requant: p.requant };
        conform("max pool", &encode(&tensors, Op::MaxPool(pool), arena, &[0], 1), std::slice::from_ref(&p.x))?;
        let (tensors, arena) = layout(&[("x", p.shape, p.zx), ("y", [n, 1, 1, c], p.zy)]);
        let op = Op::GlobalAvgPool { input: 0, output: 1, requant: p.requant };
        conform("global average", &encode(&tensors, op, arena, &[0], 1), std::slice::from_ref(&p.x))?;
    }

    #[test]
    fn slices_constants_and_concatenations_copy_what_they_should(p in layout_problem()) {
        let [n, h, w, c] = p.shape;
        let (begin, count) = (p.begin as usize, p.count as usize);
        let positions = (n * h * w) as usize;
        // Slice: channels begin..begin + count of every position.
        let (tensors, arena) = layout(&[("x", p.shape, p.zx), ("y", [n, h, w, p.count], p.zx)]);
        let op = Op::Slice { input: 0, output: 1, begin: p.begin };
        let got = conform("slice", &encode(&tensors, op, arena, &[0], 1), std::slice::from_ref(&p.x))?;
        let want: Vec<u8> =
            p.x.chunks_exact(c as usize).flat_map(|px| px[begin..begin + count].to_vec()).collect();
        prop_assert_eq!(got, want, "slice");
        // Const: its bytes, whatever the arena held.
        let (tensors, arena) = layout(&[("x", p.shape, p.zx), ("y", p.shape, p.zx)]);
        let op = Op::Const { output: 1, data: &p.x };
        let got = conform("const", &encode(&tensors, op, arena, &[0], 1), std::slice::from_ref(&p.x))?;
        prop_assert_eq!(&got, &p.x, "const");
        // Concat of two differently quantized tensors into an output quantized per channel.
        let (mut tensors, arena) =
            layout(&[("a", p.shape, p.zx), ("b", [n, h, w, p.count], p.zb), ("y", [n, h, w, c + p.count], 0)]);
        tensors[1].scale = p.scale_b;
        let channels: Vec<u8> = (0..c + p.count)
            .flat_map(|k| {
                let (s, z) = if k < c { (tensors[0].scale, p.zx) } else { (p.scale_b, p.zb) };
                s.to_le_bytes().into_iter().chain(z.to_le_bytes())
            })
            .collect();
        tensors[2].channels = &channels;
        let ids: Vec<u8> = [0u16, 1].iter().flat_map(|i| i.to_le_bytes()).collect();
        let op = Op::Concat { inputs: &ids, output: 2 };
        let b: Vec<u8> = p.x.iter().take(positions * count).map(|v| v.wrapping_mul(3)).collect();
        let got = conform("concat", &encode(&tensors, op, arena, &[0, 1], 2), &[p.x.clone(), b.clone()])?;
        let want: Vec<u8> = p
            .x
            .chunks_exact(c as usize)
            .zip(b.chunks_exact(count))
            .flat_map(|(a, b)| a.iter().chain(b).copied().collect::<Vec<u8>>())
            .collect();
        prop_assert_eq!(got, want, "concat");
    }

    #[test]
    fn tables_match_the_reference(table in bytes(256), x in proptest::collection::vec(any::<u8>(), 1..300)) {
        let (tensors, arena) = layout(&[("x", [1, 1, 1, x.len() as u32], 0), ("y", [1, 1, 1, x.len() as u32], 0)]);
        conform("table", &encode(&tensors, Op::Lut { input: 0, output: 1, table: &table }, arena, &[0], 1), std::slice::from_ref(&x))?;
    }
}
