// The packed-byte dot product of 16 signed 8-bit codes of w with 16 of x (four per word),
// shared by the unit files of the direct and persistent matvecs.
fn dot16(w: vec4<u32>, x: vec4<u32>) -> i32 {
    return dot4I8Packed(w.x, x.x) + dot4I8Packed(w.y, x.y) + dot4I8Packed(w.z, x.z)
        + dot4I8Packed(w.w, x.w);
}
