//! The decoders against llama-quantize output: real tensors of every supported type from the
//! fixture GGUF files, decoded by ggml's reference (`tests/data/dequant_vectors.json`, made by
//! `tools/make_dequant_vectors.py`). The first 512 values must be bit-identical and the sums
//! over the whole tensor must agree.
//!
//! The tensor bytes are read straight from the file at the recorded offset, so this test does
//! not depend on the GGUF reader. Missing fixtures fail the test.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use gguf::dequant::dequantize_to_vec;
use gguf::GgmlType;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/");
const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/dequant_vectors.json"
);

fn read_range(path: &str, offset: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap_or_else(|e| {
        panic!("fixture {path} is missing ({e}); the dequantization tests need ../shared/fixtures")
    });
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("{path}: cannot read {len} bytes at {offset}: {e}"));
    buf
}

/// Neumaier-compensated f64 sum, so that the comparison measures the decoded values and not
/// the summation order.
fn sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for v in values {
        let t = s + v;
        c += if s.abs() >= v.abs() {
            (s - t) + v
        } else {
            (v - t) + s
        };
        s = t;
    }
    s + c
}

fn assert_close(what: &str, got: f64, want: f64) {
    let tol = 1e-9 * want.abs().max(f64::MIN_POSITIVE);
    assert!(
        (got - want).abs() <= tol,
        "{what}: {got:e} differs from ggml's {want:e} by more than 1e-9 relative"
    );
}

#[test]
fn fixture_tensors_decode_exactly() {
    let json = std::fs::read_to_string(VECTORS).expect("tests/data/dequant_vectors.json");
    let doc: Value = serde_json::from_str(&json).expect("valid JSON");
    let vectors = doc["vectors"].as_array().expect("vectors array");
    assert!(!vectors.is_empty());

    let mut types_seen = BTreeSet::new();
    for v in vectors {
        let file = v["file"].as_str().unwrap();
        let tensor = v["tensor"].as_str().unwrap();
        let ty_name = v["type"].as_str().unwrap();
        let ty = GgmlType::ALL
            .into_iter()
            .find(|t| t.name() == ty_name)
            .unwrap_or_else(|| panic!("unknown type {ty_name}"));
        let n = v["n_elements"].as_u64().unwrap() as usize;
        let offset = v["offset"].as_u64().unwrap();
        let n_bytes = v["n_bytes"].as_u64().unwrap() as usize;
        let what = format!("{file} {tensor} ({ty_name})");

        assert_eq!(ty.bytes_for(n as u64), Some(n_bytes as u64), "{what}");
        let data = read_range(&format!("{FIXTURES}{file}"), offset, n_bytes);
        let out = dequantize_to_vec(ty, &data, n).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(out.len(), n, "{what}");

        let first = v["first_bits"].as_array().unwrap();
        assert_eq!(first.len(), n.min(512), "{what}");
        for (i, want) in first.iter().enumerate() {
            let want = want.as_u64().unwrap() as u32;
            let got = out[i].to_bits();
            assert_eq!(
                got,
                want,
                "{what}: value {i} is {} ({got:#010x}), ggml gives {} ({want:#010x})",
                out[i],
                f32::from_bits(want)
            );
        }

        let s = sum(out.iter().map(|&x| x as f64));
        let s2 = sum(out.iter().map(|&x| x as f64 * x as f64));
        assert_close(&format!("{what} sum"), s, v["sum"].as_f64().unwrap());
        assert_close(
            &format!("{what} sum of squares"),
            s2,
            v["sum_sq"].as_f64().unwrap(),
        );
        types_seen.insert(ty);
    }

    // Every type the engine can decode is covered by a real tensor.
    let supported: BTreeSet<GgmlType> = GgmlType::ALL
        .into_iter()
        .filter(|t| t.is_supported())
        .collect();
    assert_eq!(types_seen, supported);
}
