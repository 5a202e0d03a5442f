#!/usr/bin/env python3
"""Make the test vectors of crates/gguf/tests/dequant_fixtures.rs.

For each fixture GGUF file and each tensor type in it, pick one tensor of that type (a 2-D
or higher weight when there is one) and record where its bytes are in the file, the bit
patterns of its first 512 decoded values and the f64 sum and sum of squares of all of them.

The values come from gguf-py's numpy `dequantize`, checked here against a scalar
transcription of ggml's C reference `dequantize_row_*` (ggml/src/ggml-quants.c), written
with numpy float32 scalars so that every operation rounds to f32 in C's order. The script
stops if the two disagree on any value it compares (the first blocks of each tensor, a
sample of blocks spread over it, or every block with --full).

Usage (from the repository root, with the fixtures in ../shared/fixtures):
    python3 tools/make_dequant_vectors.py [--fixtures DIR] [--out FILE] [--full]
Needs: numpy, gguf (gguf-py).
"""

import argparse
import json
import math
import os
import random
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

FILES = [
    "mini-f16.gguf",
    "mini-bf16.gguf",
    "mini-q8_0.gguf",
    "mini-q4_0.gguf",
    "mini-q4_1.gguf",
    "mini-q5_1.gguf",
    "mini-q2_k.gguf",
    "mini-q3_k_m.gguf",
    "mini-q4_k_m.gguf",
    "mini-q5_k_m.gguf",
    "mini-q6_k.gguf",
    "vocab-q4_k_m.gguf",
]
N_FIRST = 512
# Blocks checked against the C transcription: the first ones and a random sample.
N_HEAD_BLOCKS = 64
N_SAMPLE_BLOCKS = 64

f32 = np.float32
QK_K = 256


# ---------------------------------------------------------------------------------------
# Scalar transcription of ggml's dequantize_row_* (one block at a time). Every arithmetic
# operation is on np.float32 scalars, so it rounds exactly as C's float operations do
# (without -ffp-contract fusing).
# ---------------------------------------------------------------------------------------

def fp16(b, at):
    return f32(np.frombuffer(bytes(b[at:at + 2]), dtype="<f2")[0])


def u32(b, at):
    return int.from_bytes(bytes(b[at:at + 4]), "little")


def i8(v):
    v &= 0xFF
    return v - 256 if v >= 128 else v


def ref_f32(b):
    return [f32(np.frombuffer(bytes(b), dtype="<f4")[0])]


def ref_f16(b):
    return [fp16(b, 0)]


def ref_bf16(b):
    bits = int.from_bytes(bytes(b), "little") << 16
    return [np.array([bits], dtype=np.uint32).view(np.float32)[0]]


def ref_q4_0(b):
    d = fp16(b, 0)
    qs = b[2:18]
    y = [None] * 32
    for j in range(16):
        x0 = (qs[j] & 0x0F) - 8
        x1 = (qs[j] >> 4) - 8
        y[j] = f32(x0) * d
        y[j + 16] = f32(x1) * d
    return y


def ref_q4_1(b):
    d, m = fp16(b, 0), fp16(b, 2)
    qs = b[4:20]
    y = [None] * 32
    for j in range(16):
        x0 = qs[j] & 0x0F
        x1 = qs[j] >> 4
        y[j] = f32(x0) * d + m
        y[j + 16] = f32(x1) * d + m
    return y


def ref_q5_0(b):
    d = fp16(b, 0)
    qh = u32(b, 2)
    qs = b[6:22]
    y = [None] * 32
    for j in range(16):
        xh_0 = ((qh >> j) << 4) & 0x10
        xh_1 = (qh >> (j + 12)) & 0x10
        x0 = ((qs[j] & 0x0F) | xh_0) - 16
        x1 = ((qs[j] >> 4) | xh_1) - 16
        y[j] = f32(x0) * d
        y[j + 16] = f32(x1) * d
    return y


def ref_q5_1(b):
    d, m = fp16(b, 0), fp16(b, 2)
    qh = u32(b, 4)
    qs = b[8:24]
    y = [None] * 32
    for j in range(16):
        xh_0 = ((qh >> j) << 4) & 0x10
        xh_1 = (qh >> (j + 12)) & 0x10
        x0 = (qs[j] & 0x0F) | xh_0
        x1 = (qs[j] >> 4) | xh_1
        y[j] = f32(x0) * d + m
        y[j + 16] = f32(x1) * d + m
    return y


def ref_q8_0(b):
    d = fp16(b, 0)
    return [f32(i8(b[2 + j])) * d for j in range(32)]


def ref_q2_k(b):
    scales, q_all = b[0:16], b[16:80]
    d, mn = fp16(b, 80), fp16(b, 82)
    y = []
    is_ = 0
    for n in range(0, QK_K, 128):
        q = q_all[n // 4:n // 4 + 32]
        shift = 0
        for _ in range(4):
            sc = scales[is_]; is_ += 1
            dl, ml = d * f32(sc & 0xF), mn * f32(sc >> 4)
            for l in range(16):
                y.append(dl * f32((q[l] >> shift) & 3) - ml)
            sc = scales[is_]; is_ += 1
            dl, ml = d * f32(sc & 0xF), mn * f32(sc >> 4)
            for l in range(16):
                y.append(dl * f32((q[l + 16] >> shift) & 3) - ml)
            shift += 2
    return y


def ref_q3_k(b):
    hm, q_all, sbytes = b[0:32], b[32:96], b[96:108]
    d_all = fp16(b, 108)
    kmask1, kmask2 = 0x03030303, 0x0F0F0F0F
    aux = [u32(sbytes, 0), u32(sbytes, 4), u32(sbytes, 8), 0]
    tmp = aux[2]
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4)
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4)
    aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4)
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4)
    scales = [i8(v) for a in aux for v in a.to_bytes(4, "little")]
    y = []
    is_ = 0
    m = 1
    for n in range(0, QK_K, 128):
        q = q_all[n // 4:n // 4 + 32]
        shift = 0
        for _ in range(4):
            for h in (0, 16):
                dl = d_all * f32(scales[is_] - 32); is_ += 1
                for l in range(16):
                    v = ((q[l + h] >> shift) & 3) - (0 if hm[l + h] & m else 4)
                    y.append(dl * f32(v))
            shift += 2
            m <<= 1
    return y


def get_scale_min_k4(j, q):
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def ref_q4_k(b):
    d, mn = fp16(b, 0), fp16(b, 2)
    scales, q_all = b[4:16], b[16:144]
    y = []
    is_ = 0
    for j in range(0, QK_K, 64):
        q = q_all[j // 2:j // 2 + 32]
        sc, m = get_scale_min_k4(is_, scales)
        d1, m1 = d * f32(sc), mn * f32(m)
        sc, m = get_scale_min_k4(is_ + 1, scales)
        d2, m2 = d * f32(sc), mn * f32(m)
        y += [d1 * f32(q[l] & 0xF) - m1 for l in range(32)]
        y += [d2 * f32(q[l] >> 4) - m2 for l in range(32)]
        is_ += 2
    return y


def ref_q5_k(b):
    d, mn = fp16(b, 0), fp16(b, 2)
    scales, qh, q_all = b[4:16], b[16:48], b[48:176]
    y = []
    is_ = 0
    u1, u2 = 1, 2
    for j in range(0, QK_K, 64):
        ql = q_all[j // 2:j // 2 + 32]
        sc, m = get_scale_min_k4(is_, scales)
        d1, m1 = d * f32(sc), mn * f32(m)
        sc, m = get_scale_min_k4(is_ + 1, scales)
        d2, m2 = d * f32(sc), mn * f32(m)
        y += [d1 * f32((ql[l] & 0xF) + (16 if qh[l] & u1 else 0)) - m1 for l in range(32)]
        y += [d2 * f32((ql[l] >> 4) + (16 if qh[l] & u2 else 0)) - m2 for l in range(32)]
        is_ += 2
        u1 <<= 2
        u2 <<= 2
    return y


def ref_q6_k(b):
    d = fp16(b, 208)
    y = [None] * QK_K
    for n in range(0, QK_K, 128):
        ql = b[n // 2:n // 2 + 64]
        qh = b[128 + n // 4:128 + n // 4 + 32]
        sc = [i8(v) for v in b[192 + n // 16:192 + n // 16 + 8]]
        for l in range(32):
            is_ = l // 16
            q1 = i8((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32
            q2 = i8((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32
            q3 = i8((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32
            q4 = i8((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32
            # C: d * sc[is] * q  ==  (d * (float)sc) * (float)q
            y[n + l] = d * f32(sc[is_]) * f32(q1)
            y[n + l + 32] = d * f32(sc[is_ + 2]) * f32(q2)
            y[n + l + 64] = d * f32(sc[is_ + 4]) * f32(q3)
            y[n + l + 96] = d * f32(sc[is_ + 6]) * f32(q4)
    return y


REF = {
    T.F32: ref_f32, T.F16: ref_f16, T.BF16: ref_bf16,
    T.Q4_0: ref_q4_0, T.Q4_1: ref_q4_1, T.Q5_0: ref_q5_0, T.Q5_1: ref_q5_1, T.Q8_0: ref_q8_0,
    T.Q2_K: ref_q2_k, T.Q3_K: ref_q3_k, T.Q4_K: ref_q4_k, T.Q5_K: ref_q5_k, T.Q6_K: ref_q6_k,
}


def ref_blocks(qtype, raw, blocks):
    """C-reference values of the given block indices, as float32 bit patterns."""
    be, bb = GGML_QUANT_SIZES[qtype]
    out = {}
    for i in blocks:
        # bytes, so that indexing gives Python ints (no uint8 wrap-around).
        vals = REF[qtype](bytes(raw[i * bb:(i + 1) * bb]))
        assert len(vals) == be
        for k, v in enumerate(vals):
            assert isinstance(v, np.float32), (qtype.name, type(v))
            out[i * be + k] = int(np.array([v], dtype=np.float32).view(np.uint32)[0])
    return out


def pick(tensors):
    """A 2-D (or higher) `.weight` tensor when there is one, else the first tensor."""
    for t in tensors:
        if len(t.shape) >= 2 and t.name.endswith(".weight"):
            return t
    return tensors[0]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=os.path.join(root, "..", "shared", "fixtures"))
    ap.add_argument("--out", default=os.path.join(root, "crates", "gguf", "tests", "data",
                                                  "dequant_vectors.json"))
    ap.add_argument("--full", action="store_true",
                    help="check every block against the C transcription (slow)")
    args = ap.parse_args()
    rng = random.Random(0)

    vectors = []
    for fname in FILES:
        path = os.path.join(args.fixtures, fname)
        reader = GGUFReader(path)
        by_type = {}
        for t in reader.tensors:
            by_type.setdefault(t.tensor_type, []).append(t)
        with open(path, "rb") as f:
            file_bytes = f.read()
        for qtype in sorted(by_type, key=lambda q: q.value):
            t = pick(by_type[qtype])
            be, bb = GGML_QUANT_SIZES[qtype]
            n = int(t.n_elements)
            n_bytes = n // be * bb
            assert n_bytes == int(t.n_bytes)
            start = int(t.data_offset)
            raw = np.frombuffer(file_bytes[start:start + n_bytes], dtype=np.uint8)
            assert raw.size == n_bytes

            # gguf-py's decode (vectorised numpy) of the raw bytes.
            if qtype in (T.F32, T.F16):
                raw_typed = raw.view(np.float32 if qtype == T.F32 else np.float16)
                py_vals = dequantize(raw_typed, qtype)
            else:
                py_vals = dequantize(raw, qtype)
            py_vals = np.asarray(py_vals, dtype=np.float32).reshape(-1)
            assert py_vals.size == n, (fname, t.name)
            py_bits = py_vals.view(np.uint32)

            # ... against the scalar C transcription.
            n_blocks = n // be
            if args.full:
                blocks = range(n_blocks)
            else:
                blocks = set(range(min(N_HEAD_BLOCKS, n_blocks)))
                blocks |= set(rng.sample(range(n_blocks), min(N_SAMPLE_BLOCKS, n_blocks)))
                blocks |= {n_blocks - 1}
                blocks = sorted(blocks)
            # The first N_FIRST values must come from the C transcription.
            blocks = sorted(set(blocks) | set(range(min(n_blocks, -(-N_FIRST // be)))))
            ref = ref_blocks(qtype, raw, blocks)
            mismatches = [k for k, v in ref.items() if int(py_bits[k]) != v]
            if mismatches:
                k = mismatches[0]
                sys.exit(f"{fname} {t.name} {qtype.name}: gguf-py differs from ggml C at "
                         f"{len(mismatches)} of {len(ref)} values, first at {k}: "
                         f"{py_bits[k]:#010x} vs {ref[k]:#010x}")

            assert np.all(np.isfinite(py_vals)), (fname, t.name)
            v64 = py_vals.astype(np.float64)
            first = [ref[k] for k in range(min(N_FIRST, n))]
            vectors.append({
                "file": fname,
                "tensor": t.name,
                "type": qtype.name,
                "n_elements": n,
                "offset": start,
                "n_bytes": n_bytes,
                "first_bits": first,
                "sum": math.fsum(v64.tolist()),
                "sum_sq": math.fsum((v64 * v64).tolist()),
            })
            print(f"{fname:20} {qtype.name:5} {t.name:36} n={n:8} checked {len(ref)} values")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    doc = {
        "about": "ggml dequantization test vectors from the fixture GGUF files; made by "
                 "tools/make_dequant_vectors.py (gguf-py, checked against a scalar "
                 "transcription of ggml's dequantize_row_*). first_bits: f32 bit patterns "
                 "of the first decoded values; sum/sum_sq: exact f64 sums of all values.",
        "vectors": vectors,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(vectors)} vectors to {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
