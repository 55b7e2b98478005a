"""What the allreduce costs a data-parallel step, by network size (issue 13): ``fit(comm=...)`` at N ranks.

For each network (its parameter count from 1e3 up), it times a mini-batch step of ``fit`` in one
process and across the ranks (the same global batch, each rank a shard of it), and the in-place
allreduce of one buffer of that many parameters alone, and reports the allreduce's share of the
data-parallel step and the speed-up over one process. Every process runs one BLAS thread, so that the
ranks share the cores the way the processes of a real job share their machines.

    python benchmarks/distributed_bench.py                 # starts itself under mpiexec -n 2
    mpiexec -n 4 python benchmarks/distributed_bench.py --max-width 512 --out report.md
    python benchmarks/distributed_bench.py --comm torch    # torch.distributed over gloo (2 local ranks)

docs/distributed.md holds a run on this machine and the model for 8 GPUs over NVLink.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import nn_xp
from nn_xp.distributed import communicator, launch

#: hidden widths of a 64-H-H-10 network: about 1.4e3, 9.4e3, 8.4e4, 1.1e6 and 4.3e6 parameters
WIDTHS = (16, 64, 256, 1024, 2048)


def parameters(width: int) -> int:
    return 64 * width + width + width * width + width + width * 10 + 10


def step_seconds(width: int, batch: int, steps: int, comm: object, dtype: str) -> tuple[float, float]:
    """Seconds per step of mini-batch SGD, and per fit beyond its steps (the start: checks, broadcasts):
    medians over three pairs of fits of one and of three epochs of ``steps`` batches."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch * steps, 64)).astype(dtype)
    Y = rng.normal(size=(batch * steps, 10)).astype(dtype)
    net = nn_xp.Network([64, width, width, 10], "tanh", backend="numpy", dtype=dtype, seed=0)
    net.fit(X[:batch], Y[:batch], epochs=1, batch_size=batch, learning_rate=1e-3, comm=comm)  # warm

    def timed(epochs: int) -> float:
        start = time.perf_counter()
        net.fit(X, Y, epochs=epochs, batch_size=batch, learning_rate=1e-3, comm=comm)
        return time.perf_counter() - start

    pairs = [(timed(1), timed(3)) for _ in range(3)]
    step = statistics.median((three - one) / (2 * steps) for one, three in pairs)
    return step, statistics.median(one - step * steps for one, _ in pairs)


def allreduce_seconds(comm: object, n: int, dtype: str, repeats: int) -> float:
    buf = np.ones(n, dtype=dtype)
    comm.allreduce(buf)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        comm.allreduce(buf)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(args: argparse.Namespace) -> list[dict]:
    comm = communicator("auto")
    rows = []
    for width in [w for w in WIDTHS if w <= args.max_width]:
        n = parameters(width)
        steps = max(4, min(64, int(2e8 // (n * args.batch))))  # a few seconds per size at most
        alone, _ = step_seconds(width, args.batch, steps, None, args.dtype)
        together, start = step_seconds(width, args.batch, steps, comm, args.dtype)
        reduce = allreduce_seconds(comm, n, args.dtype, repeats=max(5, min(200, int(1e8 // n))))
        # rank 0's figures; the ranks' steps are in lockstep
        rows.append({"width": width, "params": n, "alone": alone, "together": together, "allreduce": reduce,
                     "start": start})
    return rows


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs" if seconds < 1e-2 else f"{seconds * 1e3:,.1f} ms"


def report(rows: list[dict], args: argparse.Namespace, size: int, kind: str) -> str:
    lines = [f"{size} ranks ({kind}), global batch {args.batch} rows, {args.dtype}, SGD, one BLAS thread per "
             f"process, {os.cpu_count()} cores; allreduce of one {args.dtype} buffer of all the parameters",
             "",
             "| network | parameters | bytes per allreduce | step, 1 process | step, "
             f"{size} ranks | allreduce | allreduce ÷ step | speed-up | start of a fit |",
             "|---|---|---|---|---|---|---|---|---|"]
    itemsize = np.dtype(args.dtype).itemsize
    for r in rows:
        lines.append(f"| 64-{r['width']}-{r['width']}-10 | {r['params']:,} | {r['params'] * itemsize:,} | "
                     f"{_us(r['alone'])} | {_us(r['together'])} | {_us(r['allreduce'])} | "
                     f"{r['allreduce'] / r['together']:.0%} | {r['alone'] / r['together']:.2f}× | "
                     f"{_us(r['start'])} |")
    return "\n".join(lines)


def relaunch(args: argparse.Namespace) -> None:
    """Not under a launcher: start this script as ``--ranks`` ranks of MPI or torch.distributed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    script = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    if args.comm == "mpi":
        mpiexec = Path(sys.executable).parent / "mpiexec"
        sys.exit(subprocess.call([str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(args.ranks),
                                  *script], env=env))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE=str(args.ranks))
    ranks = [subprocess.Popen(script, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)))
             for r in range(args.ranks)]
    sys.exit(max(p.wait() for p in ranks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comm", choices=["mpi", "torch"], default="mpi", help="when not under a launcher")
    parser.add_argument("--ranks", type=int, default=2, help="when not under a launcher")
    parser.add_argument("--batch", type=int, default=256, help="the global batch")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--max-width", type=int, default=1024, help="the widest hidden layer timed")
    parser.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = parser.parse_args()
    started = launch()
    if started is None:
        relaunch(args)
    rows = measure(args)
    if started.rank == 0:
        text = report(rows, args, started.size, started.launcher)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
