//! Errors of GGUF parsing and tensor decoding. Each names what is wrong and where.

use crate::GgmlType;

/// Everything that can go wrong reading a GGUF file or decoding its tensors.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: bad magic {0:02x?} (expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error(
        "file truncated: {what} at byte {offset} needs {needed} bytes, but the file has {len}"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    #[error("{what} has length {length}, which runs past the end of the file ({len} bytes)")]
    LengthPastEnd { what: String, length: u64, len: u64 },
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: String },
    #[error("metadata key {key:?}: unknown value type {ty}")]
    UnknownValueType { key: String, ty: u32 },
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    NestingTooDeep { key: String, max: usize },
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("general.alignment must be a non-zero power of two u32, found {0}")]
    BadAlignment(String),
    #[error("tensor {name:?}: {n_dims} dimensions (at most 4 allowed)")]
    TooManyDims { name: String, n_dims: u32 },
    #[error("tensor {name:?}: unknown ggml type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("tensor {name:?}: element count of shape {shape:?} overflows")]
    ElementCountOverflow { name: String, shape: Vec<u64> },
    #[error("tensor {name:?}: row of {row} elements is not a whole number of {ty} blocks ({block} elements)")]
    NotWholeBlocks {
        name: String,
        ty: GgmlType,
        row: u64,
        block: usize,
    },
    #[error("tensor {name:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor {name:?}: data [{start}, {end}) lies outside the file ({len} bytes)")]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("tensors {first:?} and {second:?} overlap in the data section")]
    OverlappingTensors { first: String, second: String },
    #[error("tensor {name:?} has type {ty}, which this engine cannot decode yet")]
    UnsupportedTensorType { name: String, ty: GgmlType },
    #[error("metadata key {key:?} is missing")]
    MissingKey { key: String },
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongValueType {
        key: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("tensor {0:?} not found")]
    MissingTensor(String),
    #[error("ggml type {0} cannot be decoded by this engine (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)")]
    UndecodableType(GgmlType),
    #[error("{ty} data of {bytes} bytes does not hold {elements} values")]
    BadBlockData {
        ty: GgmlType,
        bytes: usize,
        elements: usize,
    },
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
