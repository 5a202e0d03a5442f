//! Feeds arbitrary bytes to the GGUF parser, then exercises what a loader does with a file
//! that parsed: typed metadata access, tensor decoding, model and tokenizer construction.
//! Run with `cargo +nightly fuzz run gguf_parse` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = gguf::GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for (key, _) in file.metadata() {
        let _ = file.get_str(key);
        let _ = file.get_u64(key);
        let _ = file.get_str_array(key);
    }
    for t in file.tensors() {
        // Decoding is bounded by the file size, which the parser has checked.
        let _ = file.tensor_f32(&t.name);
    }
    let _ = rwkv_model::Rwkv7Spec::from_gguf(&file);
    let _ = rwkv_tokenizer::Tokenizer::from_gguf(&file);
});
