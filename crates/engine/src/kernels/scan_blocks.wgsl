// The layout of the chunk path's per-token values (prepended to wkv7.wgsl, whose `prep`
// writes them and `post` reads the outputs, and to the two scans, wkv7_scan.wgsl and
// wkv7_chunked.wgsl): [rows][heads][block][HEAD_SIZE] in scan_in and in post_in.

const HEAD_SIZE: u32 = 64u;
// Blocks of scan_in: w, k, a (-kk), b (kk * a), r, v.
const SCAN_W: u32 = 0u;
const SCAN_K: u32 = 1u;
const SCAN_A: u32 = 2u;
const SCAN_B: u32 = 3u;
const SCAN_R: u32 = 4u;
const SCAN_V: u32 = 5u;
const SCAN_BLOCKS: u32 = 6u;
// Blocks of post_in: the gate, v * (r.k bonus of the head), the state's read-out y (which
// the scans write).
const POST_GATE: u32 = 0u;
const POST_VB: u32 = 1u;
const POST_Y: u32 = 2u;
const POST_BLOCKS: u32 = 3u;
