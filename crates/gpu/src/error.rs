//! Errors of the GPU layer.

use gguf::GgmlType;

/// Everything that can go wrong while setting up the device, uploading weights, building
/// kernels or reading results back.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No usable adapter (none at all, or none matching the requested index/name).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),

    /// The adapter refused to create a device.
    #[error("could not create a device on adapter '{adapter}': {message}")]
    DeviceCreation { adapter: String, message: String },

    /// A tensor type the kernels cannot compute with.
    #[error("tensor '{name}' has type {ty}, which the GPU kernels do not support")]
    UnsupportedType { name: String, ty: GgmlType },

    /// The bytes given for a tensor do not match its type and shape.
    #[error("tensor '{name}' ({ty}, {rows} x {cols}): {message}")]
    BadTensor {
        name: String,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        message: String,
    },

    /// A buffer larger than the device allows.
    #[error("buffer '{label}' needs {bytes} bytes, more than the device allows ({limit} bytes)")]
    TooLarge {
        label: String,
        bytes: u64,
        limit: u64,
    },

    /// The device ran out of memory creating a buffer.
    #[error("out of GPU memory allocating {bytes} bytes for '{label}': {message}")]
    OutOfMemory {
        label: String,
        bytes: u64,
        message: String,
    },

    /// A shader or pipeline failed validation (a bug in this crate's WGSL, or a device
    /// lacking something the kernel needs).
    #[error("shader '{label}' failed to build: {message}")]
    Shader { label: String, message: String },

    /// Arguments that do not fit together (offsets past a buffer's end, zero tokens...).
    #[error("invalid arguments: {0}")]
    InvalidArgument(String),

    /// Reading a buffer back failed (mapping error, device lost, poll error).
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),
}
