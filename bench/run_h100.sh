#!/usr/bin/env bash
# Reproduces the BENCHMARKS.md table in one run on the GPU machine.
#
#   bench/run_h100.sh            # 0.4b, 1.5b, 2.9b x f16, q8_0, q4_k_m (about 5 minutes)
#   bench/run_h100.sh --quick    # 2.9b q4_k_m only, shorter runs (under a minute)
#
# Run from the repository root. Needs prebuilt binaries in $BIN (default .dev):
#   $BIN/web-rwkv-gguf   (cargo build --release)
#   $BIN/bench           (cargo build --release --example bench)
#   $BIN/vocab-q4_k_m.gguf  (the tokenizer to copy; default ../shared/fixtures/ if not there)
# For each size and type it writes a synthetic model into $MODELS (default /tmp/rwkv-bench),
# runs `bench --json` on it once (prefill of each of $PROMPTS tokens, $TOKENS decode tokens at
# batch 1, $BATCH_STEPS steps at each of $BATCHES sequences) and deletes the model (KEEP=1
# keeps it). Every JSON line, with this script's fields under "run", goes to
# $OUT/bench.jsonl (OUT default ./out); the text of everything goes to $OUT/bench.log.
# bench/table.py turns bench.jsonl into the BENCHMARKS.md tables.
#
# A run is PRESET:TYPE[:EXTRAS], EXTRAS comma-separated: profile (--profile), f16w
# (--f16-weights), persistent (--persistent), e.g. RUNS="2.9b:q4_k_m:profile 2.9b:q4_k_m:f16w".
#
# Time is bounded: every measured phase stops after $MAX_SECONDS (the bench reports what it
# did), a run is killed after $RUN_TIMEOUT s, and no new model is started after $DEADLINE s
# (a "skipped" line is written instead), so the whole script ends within about
# DEADLINE + one run (450 + ~90 s by default).
set -u -o pipefail

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

BIN=${BIN:-.dev}
OUT=${OUT:-./out}
MODELS=${MODELS:-/tmp/rwkv-bench}
SEED=${SEED:-1}
KEEP=${KEEP:-0}
if [ "$QUICK" = 1 ]; then
    RUNS=${RUNS:-"2.9b:q4_k_m:profile"}
    PROMPTS=${PROMPTS:-512}
    TOKENS=${TOKENS:-64}
    BATCHES=${BATCHES:-8}
    BATCH_STEPS=${BATCH_STEPS:-16}
else
    # The headline model first (with the per-op profile), then the cheap ones, then the rest:
    # if the deadline cuts the run short, what is missing is the least.
    RUNS=${RUNS:-"2.9b:q4_k_m:profile 0.4b:q4_k_m 0.4b:q8_0 0.4b:f16 1.5b:q4_k_m 1.5b:q8_0 1.5b:f16 2.9b:q8_0 2.9b:f16"}
    PROMPTS=${PROMPTS:-512,2048}
    TOKENS=${TOKENS:-128}
    BATCHES=${BATCHES:-8,64}
    BATCH_STEPS=${BATCH_STEPS:-32}
fi
MAX_SECONDS=${MAX_SECONDS:-12}
RUN_TIMEOUT=${RUN_TIMEOUT:-150}
DEADLINE=${DEADLINE:-450}

SYNTH="$BIN/web-rwkv-gguf"
BENCH="$BIN/bench"
VOCAB=${VOCAB:-"$BIN/vocab-q4_k_m.gguf"}
[ -f "$VOCAB" ] || VOCAB=../shared/fixtures/vocab-q4_k_m.gguf
for f in "$SYNTH" "$BENCH" "$VOCAB"; do
    [ -f "$f" ] || { echo "missing $f (see the header of $0)" >&2; exit 1; }
done

mkdir -p "$OUT" "$MODELS"
JSONL="$OUT/bench.jsonl"
LOG="$OUT/bench.log"
: > "$JSONL"
: > "$LOG"

COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ "$COMMIT" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    COMMIT="$COMMIT+dirty"
fi
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1)
GPU=${GPU:-unknown}
HOST_CPU=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')

# JSON string escaping for the few values this script writes itself.
jstr() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

log() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG" >&2; }

log "commit $COMMIT, $GPU, runs: $RUNS"
log "prompts $PROMPTS, decode $TOKENS tokens, batches $BATCHES x $BATCH_STEPS steps, phase limit ${MAX_SECONDS}s, deadline ${DEADLINE}s"

# run_fields PRESET TYPE SYNTH_S STATUS: the "run" object.
run_fields() {
    printf '{"preset":%s,"type":%s,"synth_s":%s,"status":%s,"commit":%s,"date":%s,"gpu":%s,"cpu":%s,"seed":%s,"script":"bench/run_h100.sh%s"}' \
        "$(jstr "$1")" "$(jstr "$2")" "$3" "$(jstr "$4")" "$(jstr "$COMMIT")" "$(jstr "$DATE")" \
        "$(jstr "$GPU")" "$(jstr "$HOST_CPU")" "$SEED" "$([ "$QUICK" = 1 ] && echo ' --quick')"
}

failures=0
for spec in $RUNS; do
    IFS=: read -r preset type extra <<< "$spec"
    if [ "$SECONDS" -ge "$DEADLINE" ]; then
        log "deadline reached: skipping $preset $type"
        echo "{\"run\":$(run_fields "$preset" "$type" null skipped)}" >> "$JSONL"
        continue
    fi
    model="$MODELS/synth-$preset-$type.gguf"
    log "synth $preset $type -> $model"
    start=$(date +%s%N)
    if ! "$SYNTH" synth --preset "$preset" --type "$type" --seed "$SEED" \
        --tokenizer-from "$VOCAB" --out "$model" >> "$LOG" 2>&1; then
        log "synth failed: $preset $type"
        echo "{\"run\":$(run_fields "$preset" "$type" null synth-failed)}" >> "$JSONL"
        failures=$((failures + 1))
        continue
    fi
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    synth_s=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
    args=(--model "$model" --prompt-tokens "$PROMPTS" --tokens "$TOKENS"
          --batch "$BATCHES" --batch-steps "$BATCH_STEPS" --max-seconds "$MAX_SECONDS" --json)
    # Extras after the type, comma-separated: profile, f16w (--f16-weights), persistent.
    [[ ",$extra," == *,profile,* ]] && args+=(--profile)
    [[ ",$extra," == *,f16w,* ]] && args+=(--f16-weights)
    [[ ",$extra," == *,persistent,* ]] && args+=(--persistent)
    log "bench ${args[*]}"
    json=$(timeout -k 10 "$RUN_TIMEOUT" "$BENCH" "${args[@]}" 2>> "$LOG")
    rc=$?
    if [ $rc -eq 0 ] && [ "${json: -1}" = "}" ]; then
        echo "${json%\}},\"run\":$(run_fields "$preset" "$type" "$synth_s" ok)}" >> "$JSONL"
        echo "$json" >> "$LOG"
        log "done $preset $type"
    else
        status=failed
        [ $rc -eq 124 ] || [ $rc -eq 137 ] && status=timeout
        log "bench $status (exit $rc): $preset $type"
        echo "{\"run\":$(run_fields "$preset" "$type" "$synth_s" "$status")}" >> "$JSONL"
        failures=$((failures + 1))
    fi
    [ "$KEEP" = 1 ] || rm -f "$model"
done

log "wrote $JSONL ($(wc -l < "$JSONL") lines), $failures failed"
if command -v python3 > /dev/null; then
    python3 "$(dirname "$0")/table.py" "$JSONL" | tee "$OUT/table.md"
fi
[ "$failures" = 0 ]
