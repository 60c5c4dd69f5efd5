//! The reader on small models built with the schema's own FlatBuffer builder: a well-formed one
//! reads back as built, and each kind of inconsistency is refused with the file and the part named.

use flatbuffers::FlatBufferBuilder;
use lepton_tflite::schema as fb;
use lepton_tflite::{ElementType, TfliteModel};
use std::path::Path;

/// What to build: a FULLY_CONNECTED layer (input [1,4], per-channel int8 weights [2,4], int32
/// bias, output [1,2]), with one thing changed by each test.
struct Spec {
    weight_bytes: usize,
    weight_dims: Vec<i32>,
    scales: usize,
    op_input: i32,
    opcode_index: u32,
    buffer: u32,
}

impl Default for Spec {
    fn default() -> Self {
        Spec { weight_bytes: 8, weight_dims: vec![2, 4], scales: 2, op_input: 0, opcode_index: 0, buffer: 1 }
    }
}

/// One quantized tensor (scale 0.5, zero point 0, `scales` of them along axis 0).
fn tensor<'a>(
    b: &mut FlatBufferBuilder<'a>,
    name: &str,
    dims: &[i32],
    ty: fb::TensorType,
    buffer: u32,
    scales: usize,
) -> flatbuffers::WIPOffset<fb::Tensor<'a>> {
    let shape = b.create_vector(dims);
    let name = b.create_string(name);
    let scale = b.create_vector(&vec![0.5f32; scales]);
    let zero = b.create_vector(&vec![0i64; scales]);
    let q = fb::QuantizationParameters::create(
        b,
        &fb::QuantizationParametersArgs { scale: Some(scale), zero_point: Some(zero), ..Default::default() },
    );
    fb::Tensor::create(
        b,
        &fb::TensorArgs {
            shape: Some(shape),
            type_: ty,
            buffer,
            name: Some(name),
            quantization: Some(q),
            ..Default::default()
        },
    )
}

fn build(spec: &Spec) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let weights = b.create_vector(&vec![1u8; spec.weight_bytes]);
    let bias = b.create_vector(&[0u8; 8]);
    let empty = fb::Buffer::create(&mut b, &fb::BufferArgs { data: None });
    let w_buf = fb::Buffer::create(&mut b, &fb::BufferArgs { data: Some(weights) });
    let b_buf = fb::Buffer::create(&mut b, &fb::BufferArgs { data: Some(bias) });
    let buffers = b.create_vector(&[empty, w_buf, b_buf]);
    let t = [
        tensor(&mut b, "input", &[1, 4], fb::TensorType::INT8, 0, 1),
        tensor(&mut b, "weights", &spec.weight_dims, fb::TensorType::INT8, spec.buffer, spec.scales),
        tensor(&mut b, "bias", &[2], fb::TensorType::INT32, 2, 2),
        tensor(&mut b, "output", &[1, 2], fb::TensorType::INT8, 0, 1),
    ];
    let tensors = b.create_vector(&t);
    let op_inputs = b.create_vector(&[spec.op_input, 1, 2]);
    let op_outputs = b.create_vector(&[3]);
    let op = fb::Operator::create(
        &mut b,
        &fb::OperatorArgs {
            opcode_index: spec.opcode_index,
            inputs: Some(op_inputs),
            outputs: Some(op_outputs),
            ..Default::default()
        },
    );
    let operators = b.create_vector(&[op]);
    let inputs = b.create_vector(&[0]);
    let outputs = b.create_vector(&[3]);
    let name = b.create_string("main");
    let graph = fb::SubGraph::create(
        &mut b,
        &fb::SubGraphArgs {
            tensors: Some(tensors),
            inputs: Some(inputs),
            outputs: Some(outputs),
            operators: Some(operators),
            name: Some(name),
        },
    );
    let subgraphs = b.create_vector(&[graph]);
    let code = fb::OperatorCode::create(
        &mut b,
        &fb::OperatorCodeArgs {
            deprecated_builtin_code: fb::BuiltinOperator::FULLY_CONNECTED.0 as i8,
            builtin_code: fb::BuiltinOperator::FULLY_CONNECTED,
            version: 4,
            ..Default::default()
        },
    );
    let codes = b.create_vector(&[code]);
    let description = b.create_string("built by a test");
    let model = fb::Model::create(
        &mut b,
        &fb::ModelArgs {
            version: 3,
            operator_codes: Some(codes),
            subgraphs: Some(subgraphs),
            description: Some(description),
            buffers: Some(buffers),
            ..Default::default()
        },
    );
    fb::finish_model_buffer(&mut b, model);
    b.finished_data().to_vec()
}

fn refused(spec: Spec, expected: &str) {
    let bytes = build(&spec);
    let err = TfliteModel::read(&bytes, Path::new("dense.tflite")).expect_err("refused").to_string();
    assert!(err.starts_with("dense.tflite: "), "names the file: {err}");
    assert!(err.contains(expected), "expected `{expected}` in: {err}");
}

#[test]
fn a_well_formed_model_reads_back_as_built() {
    let bytes = build(&Spec::default());
    assert!(lepton_tflite::is_tflite(&bytes));
    let m = TfliteModel::read(&bytes, Path::new("dense.tflite")).unwrap();
    assert_eq!((m.version, m.description), (3, Some("built by a test")));
    let g = m.main();
    assert_eq!((g.name, g.inputs.as_slice(), g.outputs.as_slice()), ("main", &[0][..], &[3][..]));
    let w = &g.tensors[1];
    assert_eq!((w.name, w.element, w.shape.as_slice()), ("weights", ElementType::Int8, &[2, 4][..]));
    assert_eq!(w.data, Some(&[1u8; 8][..]));
    let q = w.quantization.as_ref().unwrap();
    assert!(q.per_channel());
    assert_eq!((q.scale.as_slice(), q.zero_point.as_slice(), q.axis), (&[0.5, 0.5][..], &[0, 0][..], 0));
    assert_eq!(g.tensors[0].data, None, "the sentinel buffer 0 holds no data");
    let op = &g.operators[0];
    assert_eq!((op.kind.name().as_ref(), op.version), ("FULLY_CONNECTED", 4));
    assert_eq!((op.inputs.as_slice(), op.outputs.as_slice()), (&[Some(0), Some(1), Some(2)][..], &[3][..]));
}

#[test]
fn an_optional_input_left_out_reads_as_none() {
    let bytes = build(&Spec { op_input: -1, ..Spec::default() });
    let m = TfliteModel::read(&bytes, Path::new("dense.tflite")).unwrap();
    assert_eq!(m.main().operators[0].inputs[0], None);
}

#[test]
fn indices_out_of_range_are_refused_naming_the_operator_or_tensor() {
    refused(
        Spec { op_input: 9, ..Spec::default() },
        "operator 0 (FULLY_CONNECTED): an input is tensor 9, but the subgraph has 4 tensors",
    );
    refused(Spec { op_input: -2, ..Spec::default() }, "an input is tensor -2");
    refused(Spec { opcode_index: 3, ..Spec::default() }, "operator 0: operator code 3, but the model has 1");
    refused(Spec { buffer: 7, ..Spec::default() }, "tensor 1 (`weights`): buffer 7, but the model has 3 buffers");
}

#[test]
fn weights_of_the_wrong_length_are_refused() {
    refused(
        Spec { weight_bytes: 7, ..Spec::default() },
        "tensor 1 (`weights`): its data is 7 bytes, but 8 INT8 values take 8",
    );
}

#[test]
fn shapes_and_quantization_that_do_not_fit_are_refused() {
    refused(Spec { weight_dims: vec![2, -4], ..Spec::default() }, "dimension -4 in shape [2, -4] is negative");
    refused(
        Spec { weight_dims: vec![1 << 16, 1 << 16], scales: 1, ..Spec::default() },
        "more than 2147483648 elements",
    );
    refused(Spec { weight_dims: vec![1; 9], ..Spec::default() }, "rank 9 is above the 8 accepted");
    refused(Spec { scales: 3, ..Spec::default() }, "3 per-channel scales, but dimension 0 has 2 channels");
}

#[test]
fn bytes_that_are_not_a_tflite_model_are_refused() {
    let err = TfliteModel::read(b"\x08\x07\x12\x04onnx", Path::new("m.onnx")).unwrap_err().to_string();
    assert!(err.contains("m.onnx: not a TFLite model"), "{err}");
    let mut bytes = build(&Spec::default());
    bytes.truncate(bytes.len() / 2);
    let err = TfliteModel::read(&bytes, Path::new("cut.tflite")).unwrap_err().to_string();
    assert!(err.contains("cut.tflite: the FlatBuffer is malformed"), "{err}");
}

#[test]
fn a_quantized_model_is_not_translated_to_onnx_and_the_error_says_why() {
    let bytes = build(&Spec::default());
    let err = lepton_tflite::import::to_onnx(&bytes, Path::new("dense.tflite")).expect_err("refused").to_string();
    assert!(err.starts_with("dense.tflite: "), "names the file: {err}");
    assert!(err.contains("input `input` is INT8") && err.contains("only float models"), "{err}");
}
