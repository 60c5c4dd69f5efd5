//! The micro engine: runs a Lepton micro model (`.lpm`, see [`format`](mod@format)) with integer arithmetic
//! on a caller-provided arena, with no heap. The same code runs on a Cortex-M and on a Linux
//! board, bit for bit; on x86 with AVX-512 VNNI the matrix kernels are vectorized, with the same
//! results.
//!
//! ```text
//! let model = Interpreter::<128>::new(LPM_BYTES)?;       // validates, decodes the tensor table
//! let mut arena = [0u8; ARENA];                           // size: model.arena_bytes()
//! model.input_mut(&mut arena, 0)?.copy_from_slice(..);    // int8, quantized as model.input(0)
//! model.run(&mut arena)?;
//! let out = model.output(&arena, 0)?;                     // int8, dequantize with its scale
//! ```

pub mod format;
#[cfg(feature = "host")]
pub mod host;
pub mod kernels;
pub mod ops;

use self::format::{Header, Op, TensorDesc, MAGIC, NONE, VERSION};
use core::fmt;

/// Why a micro model cannot be loaded or run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MicroError {
    /// The bytes do not start with the `.lpm` magic.
    NotLpm,
    /// The file was written by another format version.
    Version(u16),
    /// The file is truncated or corrupt (postcard decoding failed).
    Corrupt,
    /// More tensors than the interpreter's capacity.
    TooManyTensors {
        /// Tensors in the file.
        needed: usize,
        /// Interpreter capacity.
        capacity: usize,
    },
    /// The arena is smaller than the model needs.
    ArenaTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
    /// A tensor description is inconsistent (a zero dimension, a size past the arena, a zero
    /// point outside int8…); `tensor` is its index.
    BadTensor {
        /// Tensor index.
        tensor: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An op refers to a missing tensor or has inconsistent shapes; `op` is its index.
    BadOp {
        /// Op index.
        op: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// No such model input or output.
    NoSuchIo(usize),
}

impl fmt::Display for MicroError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MicroError::NotLpm => write!(f, "not a Lepton micro model (.lpm)"),
            MicroError::Version(v) => write!(f, "format version {v}, this runtime reads {VERSION}"),
            MicroError::Corrupt => write!(f, "truncated or corrupt model"),
            MicroError::TooManyTensors { needed, capacity } => {
                write!(f, "{needed} tensors, the interpreter holds {capacity}")
            }
            MicroError::ArenaTooSmall { needed, given } => {
                write!(f, "arena of {given} bytes, the model needs {needed}")
            }
            MicroError::BadTensor { tensor, reason } => write!(f, "tensor {tensor}: {reason}"),
            MicroError::BadOp { op, reason } => write!(f, "op {op}: {reason}"),
            MicroError::NoSuchIo(i) => write!(f, "no input or output {i}"),
        }
    }
}

#[cfg(feature = "host")]
impl std::error::Error for MicroError {}

/// A loaded micro model: header and tensor table decoded (up to `T` tensors), ops decoded as they run.
#[derive(Debug, Clone)]
pub struct Interpreter<'m, const T: usize> {
    header: Header<'m>,
    tensors: heapless::Vec<TensorDesc<'m>, T>,
    ops: &'m [u8],
}

impl<'m, const T: usize> Interpreter<'m, T> {
    /// Loads and validates a model held in memory (flash, or a file read on a host).
    pub fn new(bytes: &'m [u8]) -> Result<Self, MicroError> {
        if bytes.len() < 4 || bytes[..4] != MAGIC {
            return Err(MicroError::NotLpm);
        }
        let (header, mut rest): (Header<'m>, _) = postcard::take_from_bytes(bytes).map_err(|_| MicroError::Corrupt)?;
        if header.version != VERSION {
            return Err(MicroError::Version(header.version));
        }
        let n = header.tensor_count as usize;
        if n > T {
            return Err(MicroError::TooManyTensors { needed: n, capacity: T });
        }
        let mut tensors = heapless::Vec::new();
        for i in 0..n {
            let (t, r): (TensorDesc<'m>, _) = postcard::take_from_bytes(rest).map_err(|_| MicroError::Corrupt)?;
            t.validate(header.arena_bytes as usize).map_err(|reason| MicroError::BadTensor { tensor: i, reason })?;
            let _ = tensors.push(t);
            rest = r;
        }
        let interp = Interpreter { header, tensors, ops: rest };
        for id in interp.header.inputs.iter().chain(interp.header.outputs.iter()) {
            if *id as usize >= n {
                return Err(MicroError::Corrupt);
            }
        }
        // Decode every op once: the file is complete and each op is consistent with its tensors.
        let mut ops = interp.ops;
        for i in 0..interp.header.op_count as usize {
            let (op, r): (Op<'m>, _) = postcard::take_from_bytes(ops).map_err(|_| MicroError::Corrupt)?;
            ops::validate(&op, &interp.tensors).map_err(|reason| MicroError::BadOp { op: i, reason })?;
            ops = r;
        }
        Ok(interp)
    }

    /// The header.
    pub fn header(&self) -> &Header<'m> {
        &self.header
    }

    /// Arena bytes [`run`](Self::run) needs.
    pub fn arena_bytes(&self) -> usize {
        self.header.arena_bytes as usize
    }

    /// The tensor table.
    pub fn tensors(&self) -> &[TensorDesc<'m>] {
        &self.tensors
    }

    /// Description of input `i`.
    pub fn input(&self, i: usize) -> Result<&TensorDesc<'m>, MicroError> {
        let id = *self.header.inputs.get(i).ok_or(MicroError::NoSuchIo(i))?;
        Ok(&self.tensors[id as usize])
    }

    /// Description of output `i`.
    pub fn output_desc(&self, i: usize) -> Result<&TensorDesc<'m>, MicroError> {
        let id = *self.header.outputs.get(i).ok_or(MicroError::NoSuchIo(i))?;
        Ok(&self.tensors[id as usize])
    }

    /// The ops, decoded one by one.
    pub fn ops(&self) -> OpIter<'m> {
        OpIter { rest: self.ops, left: self.header.op_count }
    }

    fn check_arena(&self, arena: &[u8]) -> Result<(), MicroError> {
        if arena.len() < self.arena_bytes() {
            return Err(MicroError::ArenaTooSmall { needed: self.arena_bytes(), given: arena.len() });
        }
        Ok(())
    }

    /// The buffer of input `i` (int8 as bytes), to write the next sample into.
    pub fn input_mut<'a>(&self, arena: &'a mut [u8], i: usize) -> Result<&'a mut [u8], MicroError> {
        self.check_arena(arena)?;
        Ok(&mut arena[self.input(i)?.range()])
    }

    /// Output `i` of the last run (int8 as bytes).
    pub fn output<'a>(&self, arena: &'a [u8], i: usize) -> Result<&'a [u8], MicroError> {
        self.check_arena(arena)?;
        Ok(&arena[self.output_desc(i)?.range()])
    }

    /// Runs every op on `arena` with the best kernels built in: on a Cortex-M with DSP
    /// (thumbv7em, thumbv8m.main) the `cortexmdsp` set where it has a kernel, elsewhere the
    /// reference kernels. Results are the same bit for bit.
    pub fn run(&self, arena: &mut [u8]) -> Result<(), MicroError> {
        self.check_arena(arena)?;
        for (i, op) in self.ops().enumerate() {
            let op = op.map_err(|_| MicroError::BadOp { op: i, reason: "corrupt" })?;
            #[cfg(lepton_dsp)]
            if kernels::cortex_m_dsp::run(&op, &self.tensors, arena) {
                continue;
            }
            ops::run(&op, &self.tensors, arena);
        }
        Ok(())
    }

    /// Sets the model's state (a streaming model's [`Op::Variable`]s) to its initial values: call
    /// it once before the first run, and to start a new stream. A model without state has
    /// nothing to set.
    pub fn reset(&self, arena: &mut [u8]) -> Result<(), MicroError> {
        self.check_arena(arena)?;
        for (i, op) in self.ops().enumerate() {
            let op = op.map_err(|_| MicroError::BadOp { op: i, reason: "corrupt" })?;
            ops::reset(&op, &self.tensors, arena);
        }
        Ok(())
    }

    /// Whether the model keeps state between runs ([`Op::Variable`]).
    pub fn has_state(&self) -> bool {
        self.ops().any(|op| matches!(op, Ok(Op::Variable { .. })))
    }

    /// Runs every op with the reference kernels only (the oracle the kernel sets are held to).
    pub fn run_reference(&self, arena: &mut [u8]) -> Result<(), MicroError> {
        self.check_arena(arena)?;
        for (i, op) in self.ops().enumerate() {
            let op = op.map_err(|_| MicroError::BadOp { op: i, reason: "corrupt" })?;
            ops::run(&op, &self.tensors, arena);
        }
        Ok(())
    }

    /// The kernel set [`run`](Self::run) uses where it has a kernel.
    pub fn kernel_set(&self) -> kernels::Isa {
        if cfg!(lepton_dsp) {
            kernels::Isa::CortexMDsp
        } else {
            kernels::Isa::Reference
        }
    }
}

/// Iterator over the ops of a model, decoding each in place.
#[derive(Debug, Clone)]
pub struct OpIter<'m> {
    rest: &'m [u8],
    left: u16,
}

impl<'m> Iterator for OpIter<'m> {
    type Item = Result<Op<'m>, MicroError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match postcard::take_from_bytes::<Op<'m>>(self.rest) {
            Ok((op, r)) => {
                self.rest = r;
                Some(Ok(op))
            }
            Err(_) => {
                self.left = 0;
                Some(Err(MicroError::Corrupt))
            }
        }
    }
}

/// Identifier of "no tensor" in ops.
pub const NO_TENSOR: u16 = NONE;
