// A checkpoint of one slot's state in one layer (see `Engine::checkpoint`): its two shift
// vectors and its WKV state copied into the checkpoint's own buffers, by a dispatch in the
// step's pass (the buffers it writes are used by nothing else in the step, so it needs no
// barrier). Offsets and sizes in vec4 words.

struct Params {
    shift_at: u32,
    wkv_at: u32,
    shift_len: u32,
    wkv_len: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ATT: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> FFN: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> WKV: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> ATT_OUT: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> FFN_OUT: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read_write> WKV_OUT: array<vec4<u32>>;

@compute @workgroup_size(256)
fn main(
    @builtin(global_invocation_id) g: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let stride = nwg.x * 256u;
    for (var i = g.x; i < P.wkv_len; i += stride) {
        WKV_OUT[i] = WKV[P.wkv_at + i];
    }
    for (var i = g.x; i < P.shift_len; i += stride) {
        ATT_OUT[i] = ATT[P.shift_at + i];
        FFN_OUT[i] = FFN[P.shift_at + i];
    }
}
