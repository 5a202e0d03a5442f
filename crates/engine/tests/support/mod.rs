//! Helpers shared by the engine's integration tests: one GPU context per test binary and
//! the fixtures directory (CI always has it; a missing fixture fails the test).
#![allow(dead_code)] // each test file uses part of it

pub mod rng;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use gguf::GgufFile;
use rwkv_gpu::{ContextOptions, GpuContext};

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
}

/// A fixture file, opened.
pub fn fixture(name: &str) -> GgufFile {
    let path = fixtures().join(name);
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The GPU context every test of the binary shares.
pub fn context() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        Arc::new(
            GpuContext::new(&ContextOptions::default())
                .expect("a GPU adapter (CI installs lavapipe)"),
        )
    })
    .clone()
}
