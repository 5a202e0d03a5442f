//! GGUF files as llama.cpp writes them: a memory-mapped, validating reader
//! ([`GgufFile`]), the ggml tensor types ([`GgmlType`]) and exact CPU decoders for their
//! block formats ([`dequant`]).

pub mod dequant;
mod error;
mod reader;
mod types;
pub mod writer;

pub use error::{GgufError, Result};
pub use reader::{GgufFile, MetadataValue, TensorInfo};
pub use types::GgmlType;
pub use writer::GgufWriter;
