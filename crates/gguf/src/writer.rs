//! Writing GGUF v3 files in llama.cpp's layout: used to build test models, malformed files
//! for the parser's tests, and (streamed by [`GgufStreamWriter`]) full-size synthetic models.

use std::io::{self, Write};

use crate::reader::{MetadataValue, DEFAULT_ALIGNMENT};
use crate::types::GgmlType;

/// A tensor to be written: its ggml dims, type and already-encoded bytes.
#[derive(Clone, Debug)]
pub struct TensorToWrite {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

/// Collects metadata and tensors, then writes them as one GGUF v3 file.
#[derive(Default, Debug)]
pub struct GgufWriter {
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<TensorToWrite>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn metadata(&mut self, key: impl Into<String>, value: MetadataValue) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a tensor. `data` must hold exactly the bytes of `dims` values of `ty`.
    pub fn tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(TensorToWrite {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            data,
        });
        self
    }

    /// Adds an F32 tensor from values.
    pub fn tensor_f32(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        values: &[f32],
    ) -> &mut Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, GgmlType::F32, data)
    }

    /// Adds an F16 tensor from values (rounded to nearest f16).
    pub fn tensor_f16(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        values: &[f32],
    ) -> &mut Self {
        let data = values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        self.tensor(name, dims, GgmlType::F16, data)
    }

    fn alignment(&self) -> u64 {
        alignment_of(&self.metadata)
    }

    /// Serialises the file.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let alignment = self.alignment();
        let header = encode_header(
            &self.metadata,
            self.tensors.iter().map(|t| {
                (
                    t.name.as_str(),
                    t.dims.as_slice(),
                    t.ty,
                    t.data.len() as u64,
                )
            }),
            alignment,
        );
        out.write_all(&header)?;
        let mut written = 0u64;
        for t in &self.tensors {
            out.write_all(&t.data)?;
            written += t.data.len() as u64;
            let padded = written.next_multiple_of(alignment);
            out.write_all(&vec![0u8; (padded - written) as usize])?;
            written = padded;
        }
        Ok(())
    }

    /// Serialises the file into memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v).expect("writing to a Vec cannot fail");
        v
    }
}

/// A tensor of a streamed file: its name, ggml dims and type. Its data size follows from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorHeader {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorHeader {
    pub fn new(name: impl Into<String>, dims: &[u64], ty: GgmlType) -> Self {
        TensorHeader {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
        }
    }

    /// Number of values.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of data, or `None` if the shape is not a whole number of blocks of the type.
    pub fn n_bytes(&self) -> Option<u64> {
        self.ty.bytes_for(self.n_elements())
    }
}

/// Writes a GGUF v3 file as a stream, for files too large to build in memory: the header,
/// with every tensor's offset computed from its shape and type, goes out first; then the
/// tensors' data, in header order, in pieces of any size ([`write_data`](Self::write_data)).
/// The padding between tensors is written here. The bytes are the same as
/// [`GgufWriter::write_to`] writes for the same metadata and tensors.
pub struct GgufStreamWriter<W: Write> {
    out: W,
    alignment: u64,
    sizes: Vec<u64>,
    /// The tensor being written and how many of its bytes are written.
    current: usize,
    in_current: u64,
    /// Bytes written to `out` so far, and in all.
    position: u64,
    file_size: u64,
}

impl<W: Write> GgufStreamWriter<W> {
    /// Writes the header. Fails (`InvalidInput`) if a tensor's shape is not a whole number of
    /// blocks of its type.
    pub fn new(
        mut out: W,
        metadata: &[(String, MetadataValue)],
        tensors: &[TensorHeader],
    ) -> io::Result<Self> {
        let alignment = alignment_of(metadata);
        let sizes = tensors
            .iter()
            .map(|t| {
                t.n_bytes().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "tensor {}: {:?} is not a whole number of {} blocks",
                            t.name, t.dims, t.ty
                        ),
                    )
                })
            })
            .collect::<io::Result<Vec<u64>>>()?;
        let header = encode_header(
            metadata,
            tensors
                .iter()
                .zip(&sizes)
                .map(|(t, &n)| (t.name.as_str(), t.dims.as_slice(), t.ty, n)),
            alignment,
        );
        out.write_all(&header)?;
        let data: u64 = sizes.iter().map(|&n| n.next_multiple_of(alignment)).sum();
        let mut w = GgufStreamWriter {
            out,
            alignment,
            sizes,
            current: 0,
            in_current: 0,
            position: header.len() as u64,
            file_size: header.len() as u64 + data,
        };
        w.skip_empty()?;
        Ok(w)
    }

    /// Total size of the file being written.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Appends bytes to the tensors' data, in header order; a piece may span tensors. Writing
    /// past the last tensor is an error (`InvalidInput`).
    pub fn write_data(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let Some(&size) = self.sizes.get(self.current) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "more tensor data than the header describes",
                ));
            };
            let n = ((size - self.in_current) as usize).min(bytes.len());
            self.out.write_all(&bytes[..n])?;
            self.in_current += n as u64;
            self.position += n as u64;
            bytes = &bytes[n..];
            if self.in_current == size {
                self.end_tensor()?;
            }
        }
        Ok(())
    }

    /// Pads the finished tensor and moves to the next non-empty one.
    fn end_tensor(&mut self) -> io::Result<()> {
        let padded = self.position.next_multiple_of(self.alignment);
        self.out
            .write_all(&vec![0u8; (padded - self.position) as usize])?;
        self.position = padded;
        self.current += 1;
        self.in_current = 0;
        self.skip_empty()
    }

    fn skip_empty(&mut self) -> io::Result<()> {
        if self.sizes.get(self.current) == Some(&0) {
            self.end_tensor()?;
        }
        Ok(())
    }

    /// Checks that every tensor's data was written, flushes, and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if self.current < self.sizes.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tensor data ended early: tensor {} of {} has {} of {} bytes",
                    self.current,
                    self.sizes.len(),
                    self.in_current,
                    self.sizes[self.current]
                ),
            ));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

fn alignment_of(metadata: &[(String, MetadataValue)]) -> u64 {
    metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(DEFAULT_ALIGNMENT)
}

/// The header (up to the aligned start of the data section) of a file whose tensors are
/// `(name, dims, type, data bytes)`, each tensor's data padded to `alignment`.
fn encode_header<'a>(
    metadata: &[(String, MetadataValue)],
    tensors: impl ExactSizeIterator<Item = (&'a str, &'a [u64], GgmlType, u64)>,
    alignment: u64,
) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(b"GGUF");
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut header, key);
        header.extend_from_slice(&value_type(value).to_le_bytes());
        put_value(&mut header, value);
    }
    let mut offset = 0u64;
    for (name, dims, ty, size) in tensors {
        put_string(&mut header, name);
        header.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            header.extend_from_slice(&d.to_le_bytes());
        }
        header.extend_from_slice(&ty.id().to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        offset = (offset + size).next_multiple_of(alignment);
    }
    pad_to(&mut header, alignment);
    header
}

fn pad_to(buf: &mut Vec<u8>, alignment: u64) {
    let len = (buf.len() as u64).next_multiple_of(alignment) as usize;
    buf.resize(len, 0);
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// GGUF's value type id.
fn value_type(v: &MetadataValue) -> u32 {
    match v {
        MetadataValue::U8(_) => 0,
        MetadataValue::I8(_) => 1,
        MetadataValue::U16(_) => 2,
        MetadataValue::I16(_) => 3,
        MetadataValue::U32(_) => 4,
        MetadataValue::I32(_) => 5,
        MetadataValue::F32(_) => 6,
        MetadataValue::Bool(_) => 7,
        MetadataValue::String(_) => 8,
        MetadataValue::Array(_) => 9,
        MetadataValue::U64(_) => 10,
        MetadataValue::I64(_) => 11,
        MetadataValue::F64(_) => 12,
    }
}

fn put_value(buf: &mut Vec<u8>, v: &MetadataValue) {
    match v {
        MetadataValue::U8(x) => buf.push(*x),
        MetadataValue::I8(x) => buf.push(*x as u8),
        MetadataValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Bool(x) => buf.push(*x as u8),
        MetadataValue::String(s) => put_string(buf, s),
        MetadataValue::Array(items) => {
            // An empty array is written as an array of u8; GGUF keeps no type for it otherwise.
            let elem_ty = items.first().map(value_type).unwrap_or(0);
            buf.extend_from_slice(&elem_ty.to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(buf, item);
            }
        }
        MetadataValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}
