"""Two nn_xp checkouts side by side: is a fit without the new options as fast as before?

One worker process per checkout (each imports its own ``nn_xp``) stays alive for the whole run; the
rounds alternate between them, in an order rotated every round, each worker timing the same fits on the
same data and starting weights (``bench.make_problem``). A case is a backend, a size of ``bench.SIZES``,
full batch or mini-batches of ``bench.BATCH`` with Adam, and a dtype. The ratio new ÷ old is taken within
each round (paired), and its median and range over the rounds are reported.

    git worktree add /tmp/nn_xp-old <commit>
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/versions.py /tmp/nn_xp-old .
    python benchmarks/versions.py OLD NEW --backends numpy,torch,jax --sizes 0,1,3 --rounds 7
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: seconds one timed fit should last (its epochs are set once, from the warm-up, the same for both)
RUN_SECONDS = 0.4


def worker(checkout: str) -> None:
    """Read one JSON case a line from stdin, answer with the seconds per epoch of a timed fit."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(Path(checkout).resolve()))
    import gc

    import numpy as np
    from bench import BATCH, SIZES, make_problem

    import nn_xp

    print(f"worker: nn_xp from {Path(nn_xp.__file__).parent}", file=sys.stderr, flush=True)
    nets: dict[str, tuple] = {}
    for line in sys.stdin:
        case = json.loads(line)
        key = json.dumps(case["case"], sort_keys=True)
        if key not in nets:
            backend, index, mini, dtype = case["case"]
            sizes, m, lr = SIZES[index]
            prob = make_problem(sizes, m, dtype, BATCH if mini else None, backend, None, lr)
            acts = ["sigmoid"] * (len(sizes) - 2) + ["identity"]
            net = nn_xp.Network(list(sizes), acts, loss="mse", backend=backend, dtype=dtype)
            X, Y = net.backend.asarray(prob.X), net.backend.asarray(prob.Y)
            nets[key] = (net, prob, X, Y)
        net, prob, X, Y = nets[key]
        net.set_weights(prob.weights)
        net.rng = np.random.default_rng(prob.shuffle_seed)
        opt = nn_xp.Adam(prob.lr) if prob.batch_size else nn_xp.SGD(prob.lr)
        epochs = case["epochs"]
        gc.collect()
        time.sleep(0.1)
        start = time.perf_counter()
        history = net.fit(X, Y, epochs=epochs, optimizer=opt, batch_size=prob.batch_size)
        seconds = (time.perf_counter() - start) / epochs
        print(json.dumps({"seconds": seconds, "loss": history.history["loss"][-1]}), flush=True)


class Worker:
    def __init__(self, checkout: str) -> None:
        env = dict(os.environ, JAX_ENABLE_X64="1")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", checkout], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def time(self, case: list, epochs: int) -> dict:
        self.proc.stdin.write(json.dumps({"case": case, "epochs": epochs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a worker died on case {case}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--backends", default="numpy,torch,jax")
    ap.add_argument("--sizes", default="0,1,3", help="indices into bench.SIZES")
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    workers = {"old": Worker(args.old), "new": Worker(args.new)}
    cases = [[b, int(s), mini, d] for b in args.backends.split(",") for s in args.sizes.split(",")
             for mini in (False, True) for d in args.dtypes.split(",")]
    print(f"{'case':42}{'old':>12}{'new':>12}{'new / old: median (range)':>30}")
    try:
        for case in cases:
            for w in workers.values():  # warm-up (JAX compiles), and the epochs of a timed fit
                w.time(case, 2)
            epochs = 2
            for _ in range(3):  # a short fit's time is mostly its setup: measure again at the right length
                per_epoch = workers["old"].time(case, epochs)["seconds"]
                epochs = max(2, min(1 << 16, int(RUN_SECONDS / per_epoch)))
            for w in workers.values():
                w.time(case, epochs)  # a fit of this many epochs once (JAX compiles its chunk)
            times: dict[str, list[float]] = {"old": [], "new": []}
            losses = {}
            for r in range(args.rounds):
                for name in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
                    result = workers[name].time(case, epochs)
                    times[name].append(result["seconds"])
                    losses[name] = result["loss"]
            ratios = [n / o for n, o in zip(times["new"], times["old"])]
            backend, index, mini, dtype = case
            label = f"{backend} size {index} {'mini-batch' if mini else 'full batch'} {dtype} ({epochs} ep)"
            same = "" if losses["old"] == losses["new"] else f"  losses differ: {losses}"
            print(f"{label:42}{statistics.median(times['old']) * 1e6:>10.1f}us"
                  f"{statistics.median(times['new']) * 1e6:>10.1f}us"
                  f"{statistics.median(ratios):>14.3f} ({min(ratios):.2f}-{max(ratios):.2f}){same}",
                  flush=True)
    finally:
        for w in workers.values():
            w.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
