//! Errors of building a model from a GGUF file.

use gguf::{GgmlType, GgufError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("architecture {0:?} is not supported yet (this engine runs \"rwkv7\")")]
    UnsupportedArchitecture(String),
    #[error("metadata key {key:?}: {reason}")]
    BadMetadata { key: String, reason: String },
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    WrongShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor {name:?} has type {ty}, which this engine cannot compute with yet")]
    UnsupportedTensorType { name: String, ty: GgmlType },
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfRange { id: u32, vocab_size: usize },
    #[error("state file: {0}")]
    StateFile(String),
    #[error("state does not belong to this model: {0}")]
    StateMismatch(String),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
