#!/usr/bin/env bash
# Prepares, on the development machine, what a GPU-machine run needs in the git-ignored
# folder .dev (carry it, and .gl, with the device tool; 64 MiB in all):
#   .dev/web-rwkv-gguf, .dev/bench        stripped release binaries (synth, serve; the bench)
#   .dev/tests/{matmul,matvec,engine,rounding,sample}  stripped GPU test binaries (fixtures baked in by path)
#   .dev/fixtures/                        the fixtures those tests read (a subset: see FIXTURES)
#   .dev/vocab-q4_k_m.gguf                the tokenizer the synthetic models copy
# and the Vulkan loader packages in .gl if they are missing. Then, on the GPU machine:
#   for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; bench/device_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FIX=../shared/fixtures
FIXTURES=${FIXTURES:-"mini-f16.gguf mini-bf16.gguf mini-q8_0.gguf mini-q4_k_m.gguf mini-q6_k.gguf mini-q4_0.gguf mini-q5_k_m.gguf mini-q4_1.gguf mini-q5_1.gguf mini-q2_k.gguf mini-q3_k_m.gguf"}

cargo build --release --bin web-rwkv-gguf --example bench
mkdir -p .dev/tests .dev/fixtures
strip -o .dev/web-rwkv-gguf target/release/web-rwkv-gguf
strip -o .dev/bench target/release/examples/bench
for t in matmul matvec; do
    exe=$(cargo test --release -p rwkv-gpu --test "$t" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys; print([j["executable"] for j in map(json.loads, sys.stdin) if j.get("executable")][-1])')
    strip -o ".dev/tests/$t" "$exe"
done
for t in engine rounding sample; do
    exe=$(cargo test --release -p rwkv-engine --test "$t" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys; print([j["executable"] for j in map(json.loads, sys.stdin) if j.get("executable")][-1])')
    strip -o ".dev/tests/$t" "$exe"
done
for f in $FIXTURES; do cp "$FIX/$f" .dev/fixtures/; done
# The prompts some engine tests run (small; the expected logits stay behind).
mkdir -p .dev/fixtures/expected
cp "$FIX"/expected/*.tokens.json .dev/fixtures/expected/
cp "$FIX/vocab-q4_k_m.gguf" .dev/
# The test binaries look for the fixtures where they were on this machine.
realpath "$FIX" > .dev/fixtures/PATH

if ! ls .gl/*.deb >/dev/null 2>&1; then
    grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >> .git/info/exclude
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    apt-get $o update -qq
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo /.dev/ >> .git/info/exclude
# The device tool carries 64 MiB in all (with the tracked tree): leave the matvec tests
# behind when everything does not fit with room to spare.
if [ "$(du -sm .dev .gl | awk '{s += $1} END {print s}')" -gt 60 ]; then
    echo "over 60 MiB: .dev/tests/matvec left out" >&2
    rm -f .dev/tests/matvec
fi
du -sh .dev .gl
