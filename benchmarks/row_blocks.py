"""How fast a layer's elementwise passes run on blocks of rows of a given size, against whole arrays.

The passes are those fit makes on a sigmoid layer of nn_xp's buffered engine (NumPy): the bias add and the
sigmoid's four forward, its derivative's three backward (``nn_xp.engine.buffered.ELEMENTWISE_BLOCK_BYTES``
is chosen from this). Median of interleaved rounds, in ms::

    python benchmarks/row_blocks.py --rows 8192 --width 1024 --rounds 9
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import nn_xp
from nn_xp.engine.buffered import activate_rows, derive_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--kib", default="0,64,128,256,512,1024", help="block sizes in KiB (0: whole arrays)")
    args = parser.parse_args()
    sigmoid = nn_xp.activations.ACTIVATIONS["sigmoid"]
    sizes = [int(k) for k in args.kib.split(",")]
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(0)
        Z = rng.standard_normal((args.rows, args.width)).astype(dtype)
        A, dA = np.empty_like(Z), np.empty_like(Z)
        b = rng.standard_normal(args.width).astype(dtype)
        times: dict[int, list[float]] = {k: [] for k in sizes}
        for _ in range(args.rounds):
            for kib in sizes:
                rows = args.rows if kib == 0 else max(1, (kib << 10) // (args.width * Z.itemsize))
                Z[...], dA[...] = 0.1, 0.3  # the same values every run (no denormals)
                start = time.perf_counter()
                activate_rows(sigmoid, Z, b, A, rows, np)
                derive_rows(sigmoid, dA, Z, A, rows, np)
                times[kib].append(time.perf_counter() - start)
        line = ", ".join(f"{'whole' if k == 0 else f'{k} KiB'} {np.median(t) * 1e3:.1f}"
                         for k, t in times.items())
        print(f"{np.dtype(dtype).name} {args.rows} x {args.width}: {line} ms")


if __name__ == "__main__":
    main()
