#!/usr/bin/env bash
# On the GPU machine, after bench/prepare_device.sh here (see its header): the GPU tests on
# the real device, then the benchmark table of bench/run_h100.sh (its variables apply, e.g.
# RUNS, BATCHES). Everything goes to $OUT (default ./out): tests.log, bench.jsonl, table.md.
#   TESTS=0 skips the tests; BENCH=0 skips the benchmarks.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./out}
mkdir -p "$OUT"
if [ "${TESTS:-1}" = 1 ]; then
    # Put the fixtures where the test binaries were built to find them.
    dest=$(cat .dev/fixtures/PATH)
    mkdir -p "$dest" && cp -n .dev/fixtures/*.gguf .dev/vocab-q4_k_m.gguf "$dest"/
    {
        .dev/tests/matmul q4_k f16 q6_k q8_0 other_tile split mid_height
        .dev/tests/matvec q4_k f16 q6_k q8_0 rows_longer several
        .dev/tests/engine generated_model chunked_prefill a_batch
    } 2>&1 | grep -E "^test |test result|panicked|adapter" | tee "$OUT/tests.log"
fi
if [ "${BENCH:-1}" = 1 ]; then
    OUT=$OUT bash bench/run_h100.sh
fi
