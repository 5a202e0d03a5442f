#!/usr/bin/env python3
"""Turns bench.jsonl (from bench/run_h100.sh, or any `bench --json` lines) into the markdown
tables of BENCHMARKS.md. Python 3 standard library only.

    python3 bench/table.py out/bench.jsonl > out/table.md

Bandwidth floor: the bytes a step must read divided by the reference bandwidth the bench
reports (2.77 TB/s, measured on the H100): at batch 1 every weight except the embedding table
(one row of it); at batch B the weights once plus, per sequence, an embedding row and its WKV
state read and written. "% floor" is the measured rate over the floor's rate.
"""

import json
import sys

PRESET_ORDER = {"0.1b": 0, "0.4b": 1, "1.5b": 2, "2.9b": 3, "7.2b": 4}
TYPE_ORDER = {"F16": 0, "Q8_0": 1, "Q6_K": 2, "Q5_K_M": 3, "Q4_K_M": 4, "Q4_0": 5}


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: {e}")
    return rows


def fmt(x, digits=1):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def size_of(r):
    run = r.get("run", {})
    if "preset" in run:
        return run["preset"]
    m = r["model"]
    return f"{m['n_layer']}x{m['n_embd']}"


def type_of(r):
    """The file type, marked when quantized weights had resident f16 copies or one-token
    steps ran persistent layer tails."""
    t = r["model"]["file_type"]
    if r.get("f16_weights"):
        t += " (f16 weights)"
    if r.get("persistent_grids"):
        t += " (persistent)"
    return t


def sort_key(r):
    m = r.get("model", {})
    run = r.get("run", {})
    preset = run.get("preset", "")
    ftype = m.get("file_type", run.get("type", "").upper())
    return (PRESET_ORDER.get(preset, 99), m.get("params", 0), TYPE_ORDER.get(ftype, 99), ftype,
            bool(r.get("f16_weights")), bool(r.get("persistent_grids")))


def pct(x):
    return f"{100 * x:.1f}%"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rows = load(sys.argv[1])
    ok = [r for r in rows if "decode" in r]
    bad = [r for r in rows if "decode" not in r]
    ok.sort(key=sort_key)
    out = []
    w = out.append

    if ok:
        first = ok[0]
        a = first["adapter"]
        run = first.get("run", {})
        bw = first.get("bandwidth_bytes_s", 2.77e12)
        gpu = run.get("gpu") or "unknown"
        device = a["name"] if gpu == "unknown" else f"{gpu} (nvidia-smi: name, driver, memory)"
        w(f"- Device: {device}; adapter {a['name']} ({a['backend']}, {a['device_type']}, "
          f"{a['driver']} {a['driver_info']})")
        if run.get("cpu"):
            w(f"- Host CPU: {run['cpu']}")
        w(f"- Commit: {run.get('commit', 'unknown')}; date {run.get('date', 'unknown')}; "
          f"script `{run.get('script', 'bench')}`")
        w(f"- Bandwidth floor: bytes read per token / {bw / 1e12:.2f} TB/s")
        w("")

    prompts = sorted({p["requested_tokens"] for r in ok for p in r["prefill"]})
    batches = sorted({b["batch"] for r in ok for b in r["batches"]})

    # Main table.
    head = ["model", "type", "file GiB", "load s", "GPU MiB", "ops/step"]
    head += [f"prefill {n} tok/s" for n in prompts]
    head += ["decode b=1 tok/s", "p50 ms", "p99 ms", "MB/token", "floor tok/s", "% floor"]
    head += [f"b={b} tok/s (% floor)" for b in batches]
    w("| " + " | ".join(head) + " |")
    w("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
    truncated = False
    for r in ok:
        m, d = r["model"], r["decode"]
        cells = [size_of(r), type_of(r), f"{m['file_bytes'] / 2**30:.2f}",
                 f"{r['load_s']:.2f}", fmt(r["gpu_bytes"] / 2**20), str(r["ops_per_step"])]
        by_prompt = {p["requested_tokens"]: p for p in r["prefill"]}
        for n in prompts:
            p = by_prompt.get(n)
            if p is None:
                cells.append("–")
            else:
                mark = ""
                if p["prompt_tokens"] < p["requested_tokens"]:
                    mark = f" ({p['prompt_tokens']}*)"
                    truncated = True
                cells.append(fmt(p["tok_s"]) + mark)
        cells += [fmt(d["tok_s"]), f"{d['ms_p50']:.2f}", f"{d['ms_p99']:.2f}",
                  fmt(d["bytes_per_token"] / 1e6), fmt(d["floor_tok_s"], 0), pct(d["floor_fraction"])]
        by_batch = {b["batch"]: b for b in r["batches"]}
        for n in batches:
            b = by_batch.get(n)
            cells.append("–" if b is None else f"{fmt(b['tok_s'])} ({pct(b['floor_fraction'])})")
        w("| " + " | ".join(cells) + " |")
    if truncated:
        w("")
        w("\\* prompt cut short by the bench's time limit: tokens actually prefilled.")

    # Batch details: the floors at each batch size.
    if batches:
        w("")
        w("| model | type | batch | steps | tok/s | step p50 ms | step p99 ms | floor tok/s | % floor |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in ok:
            for b in r["batches"]:
                w(f"| {size_of(r)} | {type_of(r)} | {b['batch']} | {b['steps']} | "
                  f"{fmt(b['tok_s'])} | {b['step_ms_p50']:.2f} | {b['step_ms_p99']:.2f} | "
                  f"{fmt(b['floor_tok_s'], 0)} | {pct(b['floor_fraction'])} |")

    # Profiles.
    for r in ok:
        p = r.get("profile")
        if not p:
            continue
        w("")
        w(f"GPU time per decode token by op kind, {size_of(r)} {type_of(r)} "
          f"(--profile; {fmt(p['total_us'])} us in ops):")
        w("")
        w("| op | dispatches | us/token | share |")
        w("|---|---:|---:|---:|")
        for op in p["ops"]:
            w(f"| {op['kind']} | {op['dispatches']} | {fmt(op['us'])} | "
              f"{100 * op['us'] / max(p['total_us'], 1e-9):.1f}% |")

    if bad:
        w("")
        w("Not measured: " + ", ".join(
            f"{r.get('run', {}).get('preset', '?')} {r.get('run', {}).get('type', '?')} "
            f"({r.get('run', {}).get('status', 'unknown')})" for r in bad))
    print("\n".join(out))


if __name__ == "__main__":
    main()
