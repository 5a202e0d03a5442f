//! Hand-built broken GGUF files: each must give a clear error naming the problem, never a
//! panic, a hang or a huge allocation.

use gguf::{GgmlType, GgufError, GgufFile, GgufWriter, MetadataValue};

/// Low-level builder so tests can write exactly the bytes a hostile file would hold.
struct Raw {
    buf: Vec<u8>,
}

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut buf = b"GGUF".to_vec();
        buf.extend_from_slice(&version.to_le_bytes());
        buf.extend_from_slice(&n_tensors.to_le_bytes());
        buf.extend_from_slice(&n_kv.to_le_bytes());
        Raw { buf }
    }
    fn u32(mut self, v: u32) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(self, s: &str) -> Self {
        let mut r = self.u64(s.len() as u64);
        r.buf.extend_from_slice(s.as_bytes());
        r
    }
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Pads to the 32-byte data section and appends `data_len` zero bytes.
    fn data(mut self, data_len: usize) -> Self {
        let len = self.buf.len().next_multiple_of(32);
        self.buf.resize(len + data_len, 0);
        self
    }
    fn parse(self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(self.buf)
    }
}

fn err(r: Raw) -> String {
    match r.parse() {
        Ok(_) => panic!("a malformed file was accepted"),
        Err(e) => e.to_string(),
    }
}

fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.metadata(
        "general.architecture",
        MetadataValue::String("rwkv7".into()),
    )
    .metadata(
        "tokenizer.ggml.tokens",
        MetadataValue::Array(vec![
            MetadataValue::String("a".into()),
            MetadataValue::String("bc".into()),
        ]),
    )
    .metadata(
        "nested",
        MetadataValue::Array(vec![MetadataValue::Array(vec![MetadataValue::I32(-3)])]),
    )
    .metadata("pi", MetadataValue::F64(3.25))
    .tensor_f32("one", &[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    .tensor_f16("two", &[3], &[0.5, -1.0, 2.0]);
    w.to_bytes()
}

#[test]
fn a_valid_file_round_trips() {
    let f = GgufFile::from_bytes(valid_file()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.get_str("general.architecture").unwrap(), "rwkv7");
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["a", "bc"]
    );
    assert_eq!(f.get_f64("pi").unwrap(), 3.25);
    assert_eq!(
        f.get("nested").unwrap(),
        &MetadataValue::Array(vec![MetadataValue::Array(vec![MetadataValue::I32(-3)])])
    );
    assert_eq!(f.tensor("one").unwrap().dims, [4, 2]);
    assert_eq!(
        f.tensor_f32("one").unwrap(),
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    );
    assert_eq!(f.tensor_f32("two").unwrap(), [0.5, -1.0, 2.0]);
    assert_eq!(f.tensor("two").unwrap().ty, GgmlType::F16);
    assert!(f
        .get_u64("pi")
        .unwrap_err()
        .to_string()
        .contains("expected unsigned integer"));
    assert!(f
        .get_str("missing")
        .unwrap_err()
        .to_string()
        .contains("\"missing\" is missing"));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = valid_file();
    for len in 0..bytes.len() {
        // Cutting into the trailing padding of the last tensor still leaves a valid file only
        // if the tensor's bytes are whole; anything shorter must fail.
        let res = GgufFile::from_bytes(bytes[..len].to_vec());
        if let Ok(f) = res {
            let end = f
                .tensors()
                .iter()
                .map(|t| f.data_offset() + t.offset + t.n_bytes)
                .max();
            assert!(end.unwrap() <= len as u64, "truncated to {len} accepted");
        }
    }
}

#[test]
fn bad_magic_and_versions() {
    let mut bytes = valid_file();
    bytes[0] = b'X';
    assert!(GgufFile::from_bytes(bytes)
        .unwrap_err()
        .to_string()
        .contains("bad magic"));
    assert!(err(Raw::header(1, 0, 0)).contains("unsupported GGUF version 1"));
    assert!(err(Raw::header(4, 0, 0)).contains("unsupported GGUF version 4"));
    assert!(err(Raw::header(3u32.swap_bytes(), 0, 0)).contains("big-endian"));
    assert!(Raw::header(2, 0, 0).parse().is_ok());
}

#[test]
fn lying_lengths_do_not_allocate() {
    // A key whose length runs past the end of the file.
    let e = err(Raw::header(3, 0, 1).u64(u64::MAX));
    assert!(e.contains("past the end"), "{e}");
    // Counts no file could hold.
    assert!(err(Raw::header(3, 0, u64::MAX)).contains("metadata count"));
    assert!(err(Raw::header(3, u64::MAX, 0)).contains("tensor count"));
    // An array claiming 2^64-1 elements.
    let e = err(Raw::header(3, 0, 1).str("k").u32(9).u32(4).u64(u64::MAX));
    assert!(
        e.contains("array \"k\"") && e.contains("past the end"),
        "{e}"
    );
    // A string value longer than the file.
    let e = err(Raw::header(3, 0, 1).str("k").u32(8).u64(1 << 40));
    assert!(e.contains("past the end"), "{e}");
}

#[test]
fn bad_metadata() {
    let e = err(Raw::header(3, 0, 1).str("k").u32(13));
    assert!(e.contains("unknown value type 13"), "{e}");
    let e = err(Raw::header(3, 0, 1).str("k").u32(9).u32(99).u64(0));
    assert!(e.contains("unknown value type 99"), "{e}");
    // Arrays nested 100 deep.
    let mut r = Raw::header(3, 0, 1).str("deep").u32(9);
    for _ in 0..100 {
        r = r.u32(9).u64(1);
    }
    assert!(err(r).contains("nested deeper"));
    let e = err(Raw::header(3, 0, 2)
        .str("k")
        .u32(4)
        .u32(1)
        .str("k")
        .u32(4)
        .u32(2));
    assert!(e.contains("duplicate metadata key \"k\""), "{e}");
    let mut r = Raw::header(3, 0, 1).u64(2);
    r.buf.extend_from_slice(&[0xff, 0xfe]);
    assert!(err(r.u32(4).u32(0)).contains("not valid UTF-8"));
    for bad in [0u32, 3, 48] {
        let e = err(Raw::header(3, 0, 1)
            .str("general.alignment")
            .u32(4)
            .u32(bad));
        assert!(e.contains("general.alignment"), "{e}");
    }
    let e = err(Raw::header(3, 0, 1)
        .str("general.alignment")
        .u32(10)
        .u64(64));
    assert!(e.contains("general.alignment"), "{e}");
}

#[test]
fn bad_tensor_infos() {
    let e = err(Raw::header(3, 1, 0).tensor("t", &[4], 77, 0).data(16));
    assert!(e.contains("tensor \"t\": unknown ggml type id 77"), "{e}");
    let e = err(Raw::header(3, 1, 0)
        .tensor("t", &[1, 1, 1, 1, 1], 0, 0)
        .data(4));
    assert!(e.contains("5 dimensions"), "{e}");
    let e = err(Raw::header(3, 1, 0)
        .tensor("t", &[1 << 32, 1 << 32], 0, 0)
        .data(4));
    assert!(e.contains("overflows"), "{e}");
    let e = err(Raw::header(3, 1, 0).tensor("t", &[33], 8, 0).data(64));
    assert!(e.contains("whole number of Q8_0 blocks"), "{e}");
    let e = err(Raw::header(3, 1, 0).tensor("t", &[4], 0, 8).data(64));
    assert!(e.contains("not a multiple of the alignment 32"), "{e}");
    let e = err(Raw::header(3, 1, 0).tensor("t", &[64], 0, 0).data(100));
    assert!(e.contains("outside the file"), "{e}");
    let e = err(Raw::header(3, 1, 0)
        .tensor("t", &[4], 0, u64::MAX - 31)
        .data(16));
    assert!(e.contains("outside the file"), "{e}");
    let e = err(Raw::header(3, 2, 0)
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[16], 0, 32)
        .data(128));
    assert!(e.contains("\"a\" and \"b\" overlap"), "{e}");
    let e = err(Raw::header(3, 2, 0)
        .tensor("a", &[4], 0, 0)
        .tensor("a", &[4], 0, 32)
        .data(64));
    assert!(e.contains("duplicate tensor name \"a\""), "{e}");
}

#[test]
fn unsupported_types_are_named() {
    // IQ2_XXS is a valid ggml type the engine cannot decode.
    let f = Raw::header(3, 1, 0)
        .tensor("iq", &[256], 16, 0)
        .data(66)
        .parse()
        .unwrap();
    let e = f.tensor_f32("iq").unwrap_err().to_string();
    assert!(e.contains("\"iq\"") && e.contains("IQ2_XXS"), "{e}");
    assert!(f
        .tensor_f32("nope")
        .unwrap_err()
        .to_string()
        .contains("\"nope\" not found"));
}

#[test]
fn missing_file_names_the_path() {
    let e = GgufFile::open("/definitely/not/here.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/definitely/not/here.gguf"), "{e}");
}
