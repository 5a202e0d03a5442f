#!/usr/bin/env bash
# On the GPU machine, after bench/prepare_device.sh here (see its header): the GPU tests on
# the real device, then the benchmark table of bench/run_h100.sh (its variables apply, e.g.
# RUNS, BATCHES). Everything goes to $OUT (default ./out): tests.log, bench.jsonl, table.md.
#   TESTS=0 skips the tests; BENCH=0 skips the benchmarks; TILE_SWEEP (below) adds a sweep.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./out}
mkdir -p "$OUT"
if [ "${TESTS:-1}" = 1 ]; then
    # Put the fixtures where the test binaries were built to find them.
    dest=$(cat .dev/fixtures/PATH)
    mkdir -p "$dest/expected" && cp -n .dev/fixtures/*.gguf .dev/vocab-q4_k_m.gguf "$dest"/
    cp -n .dev/fixtures/expected/* "$dest"/expected/
    # The fixtures prepare_device.sh carries (every model; not the expected logits of
    # every_fixture_matches_llama_cpp: no room in the 64 MiB carried); the matvec tests where
    # their binary was carried. RWKV_REQUIRE_COOPMAT=1 makes a device without tensor cores a
    # failure.
    {
        .dev/tests/matmul
        [ -x .dev/tests/matvec ] && .dev/tests/matvec
        .dev/tests/engine --skip every_fixture
        [ -x .dev/tests/rounding ] && .dev/tests/rounding
        [ -x .dev/tests/sample ] && .dev/tests/sample
    } 2>&1 | grep -E "^test |test result|panicked|adapter|tensor-core" | tee "$OUT/tests.log"
fi
# TILE_SWEEP="32x64x2x2x32 32x128x2x2x16 ..." times prefill and batch 64 of 2.9B Q4_K_M for
# each tiled-kernel shape (WEB_RWKV_TILE) before the table.
if [ -n "${TILE_SWEEP:-}" ]; then
    m=/tmp/sweep-2.9b-q4_k_m.gguf
    .dev/web-rwkv-gguf synth --preset 2.9b --type q4_k_m --tokenizer-from .dev/vocab-q4_k_m.gguf \
        --out "$m" > /dev/null 2>&1
    for t in $TILE_SWEEP; do
        echo "== tile $t"
        WEB_RWKV_TILE=$t timeout 90 .dev/bench --model "$m" --prompt-tokens 512,2048 --tokens 4 \
            --batch 64 --batch-steps 4 --max-seconds 8 2>&1 | grep -E "prefill|b=64"
    done | tee "$OUT/tiles.log"
    rm -f "$m"
fi
if [ "${BENCH:-1}" = 1 ]; then
    OUT=$OUT bash bench/run_h100.sh
fi
