//! The GGUF container: header, metadata key/values, tensor infos and the data section.
//!
//! Layout (little-endian, versions 2 and 3):
//! `"GGUF" | u32 version | u64 tensor_count | u64 kv_count | kv* | tensor_info* | pad | data`.
//! Every length read from the file is checked against the bytes that remain before anything
//! is allocated, so a lying length gives an error instead of a huge allocation.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use crate::dequant;
use crate::error::{GgufError, Result};
use crate::types::GgmlType;

/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are rejected (bounds recursion on hostile input).
const MAX_ARRAY_DEPTH: usize = 8;

/// A metadata value. Arrays keep their element type so that empty arrays stay typed.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetadataValue {
    /// GGUF's name for the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetadataValue::U8(_) => "u8",
            MetadataValue::I8(_) => "i8",
            MetadataValue::U16(_) => "u16",
            MetadataValue::I16(_) => "i16",
            MetadataValue::U32(_) => "u32",
            MetadataValue::I32(_) => "i32",
            MetadataValue::F32(_) => "f32",
            MetadataValue::Bool(_) => "bool",
            MetadataValue::String(_) => "string",
            MetadataValue::Array(_) => "array",
            MetadataValue::U64(_) => "u64",
            MetadataValue::I64(_) => "i64",
            MetadataValue::F64(_) => "f64",
        }
    }

    /// The value as an unsigned integer, if it is any integer type holding a value >= 0.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U8(v) => Some(v as u64),
            MetadataValue::U16(v) => Some(v as u64),
            MetadataValue::U32(v) => Some(v as u64),
            MetadataValue::U64(v) => Some(v),
            MetadataValue::I8(v) => u64::try_from(v).ok(),
            MetadataValue::I16(v) => u64::try_from(v).ok(),
            MetadataValue::I32(v) => u64::try_from(v).ok(),
            MetadataValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer type that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetadataValue::I8(v) => Some(v as i64),
            MetadataValue::I16(v) => Some(v as i64),
            MetadataValue::I32(v) => Some(v as i64),
            MetadataValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, if it is a float type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(v as f64),
            MetadataValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            MetadataValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where and how one tensor is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Number of values.
    pub n_elements: u64,
    /// Number of bytes the data takes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Values per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of the dims after the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// The bytes of a GGUF file: memory-mapped from disk, or owned (tests, fuzzing).
enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed and validated GGUF file. Tensor data stays in the file's bytes until asked for.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("len", &self.storage.len())
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; as with every mmap-based model loader, a file changed
        // by another process while mapped is outside what we can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(Storage::Mapped(map))
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(Storage::Owned(bytes))
    }

    fn parse(storage: Storage) -> Result<GgufFile> {
        let mut r = Cursor {
            buf: &storage,
            pos: 0,
        };
        let magic: [u8; 4] = r.bytes(4, "magic")?.try_into().expect("4 bytes");
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32("version")?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(GgufError::BigEndian);
        }
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = r.u64("tensor count")?;
        let kv_count = r.u64("metadata count")?;

        // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes.
        r.check_count(kv_count, 13, "metadata count")?;
        let mut metadata = Vec::with_capacity(kv_count as usize);
        let mut metadata_index = HashMap::with_capacity(kv_count as usize);
        for i in 0..kv_count {
            let key = r.string(&format!("metadata key #{i}"))?;
            let ty = r.u32(&format!("type of metadata key {key:?}"))?;
            let value = r.value(&key, ty, 0)?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => match metadata[i].1 {
                MetadataValue::U32(a) if a != 0 && a.is_power_of_two() => a as u64,
                ref other => return Err(GgufError::BadAlignment(format!("{other:?}"))),
            },
        };

        // Each tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
        r.check_count(tensor_count, 24, "tensor count")?;
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut tensor_index = HashMap::with_capacity(tensor_count as usize);
        for i in 0..tensor_count {
            let info = r.tensor_info(i)?;
            if tensor_index
                .insert(info.name.clone(), tensors.len())
                .is_some()
            {
                return Err(GgufError::DuplicateTensor(info.name));
            }
            tensors.push(info);
        }

        let data_offset = r.pos.next_multiple_of(alignment);
        let file = GgufFile {
            storage,
            version,
            alignment,
            data_offset,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
        };
        file.validate_tensor_extents()?;
        Ok(file)
    }

    /// Every tensor must be aligned, lie inside the file, and not overlap another one.
    fn validate_tensor_extents(&self) -> Result<()> {
        let len = self.storage.len() as u64;
        for t in &self.tensors {
            if !t.offset.is_multiple_of(self.alignment) {
                return Err(GgufError::Misaligned {
                    name: t.name.clone(),
                    offset: t.offset,
                    alignment: self.alignment,
                });
            }
            let start = self.data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.n_bytes));
            match (start, end) {
                (Some(_), Some(end)) if end <= len => {}
                _ => {
                    return Err(GgufError::TensorOutOfBounds {
                        name: t.name.clone(),
                        start: self.data_offset.saturating_add(t.offset),
                        end: self
                            .data_offset
                            .saturating_add(t.offset)
                            .saturating_add(t.n_bytes),
                        len,
                    })
                }
            }
        }
        let mut by_offset: Vec<&TensorInfo> = self.tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        for pair in by_offset.windows(2) {
            if pair[0].offset + pair[0].n_bytes > pair[1].offset {
                return Err(GgufError::OverlappingTensors {
                    first: pair[0].name.clone(),
                    second: pair[1].name.clone(),
                });
            }
        }
        Ok(())
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset where the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the whole file in bytes.
    pub fn file_size(&self) -> u64 {
        self.storage.len() as u64
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetadataValue> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    fn wrong_type(key: &str, found: &MetadataValue, expected: &'static str) -> GgufError {
        GgufError::WrongValueType {
            key: key.to_string(),
            found: found.type_name(),
            expected,
        }
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong_type(key, v, "string"))
    }

    /// An unsigned integer value of any integer width.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| Self::wrong_type(key, v, "unsigned integer"))
    }

    /// A float value (f32 or f64).
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| Self::wrong_type(key, v, "float"))
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.require(key)?;
        let arr = v
            .as_array()
            .ok_or_else(|| Self::wrong_type(key, v, "array of strings"))?;
        arr.iter()
            .map(|e| {
                e.as_str()
                    .ok_or_else(|| Self::wrong_type(key, e, "array of strings"))
            })
            .collect()
    }

    /// An array of integers, as i64.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>> {
        let v = self.require(key)?;
        let arr = v
            .as_array()
            .ok_or_else(|| Self::wrong_type(key, v, "array of integers"))?;
        arr.iter()
            .map(|e| {
                e.as_i64()
                    .ok_or_else(|| Self::wrong_type(key, e, "array of integers"))
            })
            .collect()
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor, in its ggml encoding.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        // Extents were validated at parse time.
        let start = (self.data_offset + info.offset) as usize;
        &self.storage[start..start + info.n_bytes as usize]
    }

    /// A tensor decoded to f32 values (in ggml order).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self
            .tensor(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        if !info.ty.is_supported() {
            return Err(GgufError::UnsupportedTensorType {
                name: name.to_string(),
                ty: info.ty,
            });
        }
        let n = usize::try_from(info.n_elements).map_err(|_| GgufError::ElementCountOverflow {
            name: name.to_string(),
            shape: info.dims.clone(),
        })?;
        dequant::dequantize_to_vec(info.ty, self.tensor_bytes(info), n)
    }
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: u64,
}

impl<'a> Cursor<'a> {
    fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    fn remaining(&self) -> u64 {
        self.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos,
                needed: n,
                len: self.len(),
            });
        }
        let start = self.pos as usize;
        self.pos += n;
        Ok(&self.buf[start..start + n as usize])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.bytes(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Rejects a count of items that cannot possibly fit in the bytes that remain.
    fn check_count(&self, count: u64, min_item_bytes: u64, what: &str) -> Result<()> {
        if count.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(GgufError::LengthPastEnd {
                what: what.to_string(),
                length: count,
                len: self.len(),
            });
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(&format!("length of {what}"))?;
        if n > self.remaining() {
            return Err(GgufError::LengthPastEnd {
                what: what.to_string(),
                length: n,
                len: self.len(),
            });
        }
        let bytes = self.bytes(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_string(),
        })
    }

    /// Smallest encoding of one value of a type, used to bound array counts.
    fn min_value_bytes(ty: u32) -> u64 {
        match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 => 8,
            9 => 12,
            _ => 8,
        }
    }

    fn value(&mut self, key: &str, ty: u32, depth: usize) -> Result<MetadataValue> {
        let what = || format!("value of metadata key {key:?}");
        Ok(match ty {
            0 => MetadataValue::U8(self.array::<1>(&what())?[0]),
            1 => MetadataValue::I8(self.array::<1>(&what())?[0] as i8),
            2 => MetadataValue::U16(u16::from_le_bytes(self.array(&what())?)),
            3 => MetadataValue::I16(i16::from_le_bytes(self.array(&what())?)),
            4 => MetadataValue::U32(u32::from_le_bytes(self.array(&what())?)),
            5 => MetadataValue::I32(i32::from_le_bytes(self.array(&what())?)),
            6 => MetadataValue::F32(f32::from_le_bytes(self.array(&what())?)),
            7 => MetadataValue::Bool(self.array::<1>(&what())?[0] != 0),
            8 => MetadataValue::String(self.string(&what())?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestingTooDeep {
                        key: key.to_string(),
                        max: MAX_ARRAY_DEPTH,
                    });
                }
                let elem_ty = self.u32(&format!("element type of array {key:?}"))?;
                if elem_ty > 12 {
                    return Err(GgufError::UnknownValueType {
                        key: key.to_string(),
                        ty: elem_ty,
                    });
                }
                let n = self.u64(&format!("length of array {key:?}"))?;
                self.check_count(n, Self::min_value_bytes(elem_ty), &format!("array {key:?}"))?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(key, elem_ty, depth + 1)?);
                }
                MetadataValue::Array(items)
            }
            10 => MetadataValue::U64(u64::from_le_bytes(self.array(&what())?)),
            11 => MetadataValue::I64(i64::from_le_bytes(self.array(&what())?)),
            12 => MetadataValue::F64(f64::from_le_bytes(self.array(&what())?)),
            _ => {
                return Err(GgufError::UnknownValueType {
                    key: key.to_string(),
                    ty,
                })
            }
        })
    }

    fn tensor_info(&mut self, index: u64) -> Result<TensorInfo> {
        let name = self.string(&format!("name of tensor #{index}"))?;
        let n_dims = self.u32(&format!("dimension count of tensor {name:?}"))?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims { name, n_dims });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(self.u64(&format!("dimension {d} of tensor {name:?}"))?);
        }
        let type_id = self.u32(&format!("type of tensor {name:?}"))?;
        let offset = self.u64(&format!("offset of tensor {name:?}"))?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            id: type_id,
        })?;
        // ggml keeps element counts in int64; anything beyond that is hostile.
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| GgufError::ElementCountOverflow {
                name: name.clone(),
                shape: dims.clone(),
            })?;
        let row = dims.first().copied().unwrap_or(1);
        if !row.is_multiple_of(ty.block_elements() as u64) {
            return Err(GgufError::NotWholeBlocks {
                name,
                ty,
                row,
                block: ty.block_elements(),
            });
        }
        let n_bytes = ty
            .bytes_for(n_elements)
            .ok_or_else(|| GgufError::ElementCountOverflow {
                name: name.clone(),
                shape: dims.clone(),
            })?;
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_elements,
            n_bytes,
        })
    }
}
