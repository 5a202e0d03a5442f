// The 6-bit scale/min pairs of Q4_K and Q5_K blocks (prepended to their decoders).

// ggml get_scale_min_k4: (scale, min) number j of the 12 scale bytes at word `sb`.
fn scale_min_k4(sb: u32, j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(byte_at(sb, j) & 63u, byte_at(sb, j + 4u) & 63u);
    }
    let sc = (byte_at(sb, j + 4u) & 15u) | ((byte_at(sb, j - 4u) >> 6u) << 4u);
    let m = (byte_at(sb, j + 4u) >> 4u) | ((byte_at(sb, j) >> 6u) << 4u);
    return vec2<u32>(sc, m);
}
