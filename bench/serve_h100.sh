#!/usr/bin/env bash
# The serving load test of BENCHMARKS.md on the GPU machine: a synthetic model served with
# `serve --slots C`, C concurrent streaming clients for $SECONDS s (the load_test example),
# then `bench --batch C` on the same model for the engine's own aggregate rate at that
# concurrency. Needs prebuilt binaries in $BIN (default .dev): web-rwkv-gguf, bench,
# load_test (cargo build --release --example load_test -p rwkv-server) and
# vocab-q4_k_m.gguf. Output: $OUT/serve.log (OUT default ./out).
#
#   bench/serve_h100.sh              # 2.9b q4_k_m, 8 clients, 30 s
#   PRESET=0.4b CLIENTS=32 bench/serve_h100.sh
set -u -o pipefail
BIN=${BIN:-.dev}
OUT=${OUT:-./out}
PRESET=${PRESET:-2.9b}
TYPE=${TYPE:-q4_k_m}
CLIENTS=${CLIENTS:-8}
SECONDS_RUN=${RUN_SECONDS:-30}
MAX_TOKENS=${MAX_TOKENS:-64}
PORT=${PORT:-8089}
MODEL=/tmp/serve-$PRESET-$TYPE.gguf
mkdir -p "$OUT"
LOG="$OUT/serve.log"
"$BIN/web-rwkv-gguf" synth --preset "$PRESET" --type "$TYPE" \
    --tokenizer-from "$BIN/vocab-q4_k_m.gguf" --out "$MODEL" >/dev/null 2>&1 || exit 1
"$BIN/web-rwkv-gguf" serve --model "$MODEL" --port "$PORT" --slots "$CLIENTS" \
    --max-queue "$CLIENTS" 2>"$OUT/server.err" &
SERVER=$!
for _ in $(seq 1 120); do
    grep -q "listening on" "$OUT/server.err" && break
    sleep 0.5
done
echo "== load test: $PRESET $TYPE, $CLIENTS clients, $SECONDS_RUN s, $MAX_TOKENS tokens" | tee "$LOG"
timeout $((SECONDS_RUN + 120)) "$BIN/load_test" --url "http://127.0.0.1:$PORT" \
    --clients "$CLIENTS" --seconds "$SECONDS_RUN" --max-tokens "$MAX_TOKENS" 2>&1 | tee -a "$LOG"
kill -INT $SERVER; wait $SERVER
echo "== bench --batch $CLIENTS (same model)" | tee -a "$LOG"
timeout 120 "$BIN/bench" --model "$MODEL" --prompt-tokens 16 --tokens 16 \
    --batch "$CLIENTS" --batch-steps 64 --max-seconds 20 2>&1 | tee -a "$LOG"
rm -f "$MODEL"
