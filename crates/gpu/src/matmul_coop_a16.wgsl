// The tensor-core product's weight tiles from f16 rows (matmul_coop.wgsl's `fetch_a` and
// `stage_a`): W16 is a slice of weight rows decoded by matmul_coop_dequant.wgsl, a resident
// copy or F16 weights themselves, row-major, `cols` values per row. In range by
// construction (the product's header): unit u < A_PT * WG_SIZE <= BM * ROW_UNITS goes to row
// u / ROW_UNITS < BM, unit u % ROW_UNITS < ROW_UNITS < SU of sh_a; pa by j < A_PT.

@group(0) @binding(0) var<storage, read> W16: array<Unit>;

const A_PT: u32 = BM * ROW_UNITS / WG_SIZE;

// The weight units this thread copies for the next chunk.
var<private> pa: array<Unit, A_PT>;

fn fetch_a(li: u32, first_row: u32, w_base: u32, cols: u32, k0: u32) {
    let ld = cols / UNIT;
    let w0 = w_base / UNIT + k0 / UNIT;
    for (var j = 0u; j < A_PT; j++) {
        let u = li + j * WG_SIZE;
        pa[j] = W16[w0 + (u / ROW_UNITS) * ld + u % ROW_UNITS];
    }
}

fn stage_a(li: u32, k0: u32) {
    for (var j = 0u; j < A_PT; j++) {
        let u = li + j * WG_SIZE;
        sh_a[(u / ROW_UNITS) * SU + u % ROW_UNITS] = pa[j];
    }
}
