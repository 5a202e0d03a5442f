// Touches a buffer and does nothing else: a dispatch that binds it read-only, so that wgpu
// moves the buffer to the read-only state (with the barrier that needs) here rather than
// at the dispatch of its first reader. The engine records it where that barrier costs
// nothing extra: see `Builder::touch` in engine.rs.

@group(0) @binding(0) var<storage, read> buffer: array<u32>;

@compute @workgroup_size(1)
fn main() {
    _ = buffer[0];
}
