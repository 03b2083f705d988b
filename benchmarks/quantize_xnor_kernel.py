"""What a bit-packed XNOR-popcount kernel gives over a float matmul, measured on this CPU.

A binarized layer's dot product over K inputs in {-1, +1} is
``K - 2 * popcount(a XOR w)`` on the bit-packed operands (64 inputs per
word). This file compiles a plain C kernel that does exactly that (no SIMD
intrinsics beyond what ``-O3 -march=native`` gives the compiler, one thread)
with the system C compiler into a temporary folder, checks it against a
float matmul of the same +1/-1 matrices, and times both on the GEMM shapes
of MobileNetV2's pointwise layers. It is a micro-benchmark of the inner
product only: packing the activations and the per-channel scale are not
counted, and mltk's deployed network does not use it (it runs float convs
on unpacked weights).

    python benchmarks/quantize_xnor_kernel.py
"""

from __future__ import annotations

import ctypes
import functools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

C_SOURCE = r"""
#include <stdint.h>
#include <stddef.h>
/* out[m, n] = K - 2 * popcount(a[m] XOR w[n]) over kw 64-bit words (K real bits, padding equal in both).
   Four output columns at a time, so that each loaded activation word serves four popcounts. */
void xnor_gemm(const uint64_t *a, const uint64_t *w, int32_t *out, int M, int N, int kw, int K) {
    for (int m = 0; m < M; m++) {
        const uint64_t *ar = a + (size_t)m * kw;
        int32_t *row = out + (size_t)m * N;
        int n = 0;
        for (; n + 4 <= N; n += 4) {
            const uint64_t *w0 = w + (size_t)n * kw, *w1 = w0 + kw, *w2 = w1 + kw, *w3 = w2 + kw;
            int c0 = 0, c1 = 0, c2 = 0, c3 = 0;
            for (int k = 0; k < kw; k++) {
                uint64_t x = ar[k];
                c0 += __builtin_popcountll(x ^ w0[k]);
                c1 += __builtin_popcountll(x ^ w1[k]);
                c2 += __builtin_popcountll(x ^ w2[k]);
                c3 += __builtin_popcountll(x ^ w3[k]);
            }
            row[n] = K - 2 * c0; row[n + 1] = K - 2 * c1; row[n + 2] = K - 2 * c2; row[n + 3] = K - 2 * c3;
        }
        for (; n < N; n++) {
            const uint64_t *wr = w + (size_t)n * kw;
            int count = 0;
            for (int k = 0; k < kw; k++) count += __builtin_popcountll(ar[k] ^ wr[k]);
            row[n] = K - 2 * count;
        }
    }
}
"""

# (M rows = batch x pixels, K inputs, N outputs) of MobileNetV2 pointwise convs at 32 px, batch 64, width 1
SHAPES = [(1024, 384, 64), (1024, 64, 384), (256, 960, 160), (256, 320, 1280)]


def compile_kernel() -> ctypes.CDLL | None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="mltk-xnor-"))
    source, library = folder / "xnor.c", folder / "libxnor.so"
    source.write_text(C_SOURCE)
    subprocess.run([compiler, "-O3", "-march=native", "-shared", "-fPIC", str(source), "-o", str(library)],
                   check=True, capture_output=True)
    lib = ctypes.CDLL(str(library))
    lib.xnor_gemm.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 4
    return lib


def pack_rows(signs: np.ndarray) -> np.ndarray:
    """+1/-1 [R, K] -> uint64 [R, ceil(K / 64)] (bit 1 = +1; padding bits 0 in every row)."""
    rows, k = signs.shape
    words = -(-k // 64)
    bits = np.zeros((rows, words * 64), dtype=np.uint8)
    bits[:, :k] = signs > 0
    return np.packbits(bits, axis=1, bitorder="little").view(np.uint64).reshape(rows, words)


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def measure(repeats: int = 20) -> dict | None:
    lib = compile_kernel()
    if lib is None:
        return None
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in SHAPES:
        a = np.where(rng.random((m, k)) < 0.5, -1.0, 1.0).astype(np.float32)
        w = np.where(rng.random((n, k)) < 0.5, -1.0, 1.0).astype(np.float32)
        packed_a, packed_w = pack_rows(a), pack_rows(w)
        out = np.zeros((m, n), dtype=np.int32)
        args = (packed_a.ctypes.data, packed_w.ctypes.data, out.ctypes.data, m, n, packed_a.shape[1], k)
        ta, tw = torch.from_numpy(a), torch.from_numpy(w)
        lib.xnor_gemm(*args)
        if not np.array_equal(out, (ta @ tw.T).numpy().astype(np.int32)):
            raise RuntimeError(f"the XNOR kernel disagrees with the float matmul at shape {(m, k, n)}")
        rows.append({"shape": f"{m} x {k} -> {n}",
                     "float_ms": _median_ms(functools.partial(torch.mm, ta, tw.T), repeats),
                     "xnor_ms": _median_ms(functools.partial(lib.xnor_gemm, *args), repeats)})
    return {"description": "XNOR-popcount micro-benchmark (benchmarks/quantize_xnor_kernel.py): a plain C kernel "
                           "(`-O3 -march=native`, one thread) against PyTorch's float32 matmul (one thread) on "
                           "MobileNetV2 pointwise-layer GEMM shapes (batch 64 at 32 px, width 1); inner product "
                           "only, activation packing not counted; outputs checked equal.", "rows": rows}


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
