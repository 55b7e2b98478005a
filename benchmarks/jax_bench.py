"""nn_xp on JAX (the compiled engine) against hand-written JAX training loops and nn_xp on NumPy.

Every size of ``bench.py`` (its ``SIZES``), full-batch gradient descent on the
same data and starting weights (``bench.make_problem``), sigmoid hidden layers
and an identity output, the loss ``0.5 ||A - Y||^2 / m`` recorded every epoch
by every peer:

- ``nn_xp jax``: ``Network(..., backend="jax").fit`` (``peers.NnXp``, as bench.py times nn_xp);
- ``jax scan`` and ``jax manual``: one jitted ``lax.scan`` over the epochs, the
  per-epoch losses returned together, the gradients from ``jax.value_and_grad``
  (``scan``) or from the blog's back-propagation written by hand (``manual``);
  the faster of the two in each round is "hand-written JAX";
- ``nn_xp numpy``: ``Network(..., backend="numpy").fit`` (the buffered engine).

Every peer runs once before timing (JAX compiles then). The peers are then
interleaved: each round runs every peer once, in an order rotated each round,
and the ratios are taken within a round (paired), their median reported with
the range over rounds. Before any timing, each peer trains a few epochs from
the same weights and must end where nn_xp on NumPy does (float32: rtol 1e-3).

    python benchmarks/jax_bench.py              # every size, float32 (~5 min on 2 cores)
    python benchmarks/jax_bench.py --quick      # the first two sizes, fewer rounds
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/jax_bench.py   # where those are set

Targets (issue 12): 1-20-1 m=100 at most 1.25x hand-written JAX and at least 4x faster than nn_xp on
NumPy; the other sizes at most 1.05x hand-written JAX.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench import SIZES, make_problem, size_name  # noqa: E402
from peers import NnXp  # noqa: E402

#: seconds one timed run should last (its epoch count is set from the warm-up run), and the most epochs
RUN_SECONDS, MAX_EPOCHS = 0.3, 1 << 16
#: seconds of rest before each timed run, so that one library's spinning worker threads do not slow the next
SETTLE = 0.2
#: the targets: nn_xp jax / hand-written JAX at most this, per size index (the blog's network first)
TARGET_HAND = {0: 1.25}
TARGET_HAND_OTHERS = 1.05
TARGET_NUMPY_SPEEDUP = {0: 4.0}


class HandJax:
    """A hand-written JAX loop: ``epochs`` epochs of full-batch descent in one jitted ``lax.scan``."""

    def __init__(self, prob, manual: bool) -> None:
        import jax
        import jax.numpy as jnp

        self.jax, self.prob, self.manual = jax, prob, manual
        self.name = "jax manual" if manual else "jax scan"
        self.X, self.Y = jnp.asarray(prob.X), jnp.asarray(prob.Y)
        self.params0 = [(jnp.asarray(W, dtype=prob.dtype), jnp.asarray(b, dtype=prob.dtype))
                        for W, b in prob.weights]
        self.programs: dict[int, object] = {}
        self.params = self.params0

    def reset(self) -> None:
        self.params = self.params0

    def program(self, epochs: int):
        if epochs not in self.programs:
            jax = self.jax
            epoch = _manual_epoch(self.prob) if self.manual else _grad_epoch(self.prob)

            @jax.jit
            def train(params, X, Y):
                return jax.lax.scan(lambda p, _: epoch(p, X, Y), params, None, length=epochs)

            self.programs[epochs] = train
        return self.programs[epochs]

    def run(self, epochs: int) -> float:
        self.params, losses = self.program(epochs)(self.params, self.X, self.Y)
        return float(np.asarray(losses)[-1])  # read back, as nn_xp reads its history

    def weights(self):
        return [(np.asarray(W, np.float64), np.asarray(b, np.float64)) for W, b in self.params]


def _forward(params, X):
    import jax.numpy as jnp

    values, A = [X], X
    for i, (W, b) in enumerate(params):
        Z = A @ W.T + b
        A = 0.5 * jnp.tanh(0.5 * Z) + 0.5 if i < len(params) - 1 else Z  # sigmoid without overflow
        values.append(A)
    return values


def _grad_epoch(prob):
    import jax

    def loss(params, X, Y):
        d = (_forward(params, X)[-1] - Y).reshape(-1)
        return 0.5 * (d @ d) / X.shape[0]

    value_and_grad = jax.value_and_grad(loss)

    def epoch(params, X, Y):
        value, grads = value_and_grad(params, X, Y)
        return jax.tree.map(lambda p, g: p - prob.lr * g, params, grads), value

    return epoch


def _manual_epoch(prob):
    import jax.numpy as jnp

    def epoch(params, X, Y):
        values = _forward(params, X)
        d = values[-1] - Y  # (m, n_out)
        flat = d.reshape(-1)
        loss = 0.5 * (flat @ flat) / X.shape[0]
        dZ, new = d / X.shape[0], [None] * len(params)
        for i in range(len(params) - 1, -1, -1):
            W, b = params[i]
            dW, db = dZ.T @ values[i], jnp.sum(dZ, axis=0)
            if i:
                A = values[i]
                dZ = (dZ @ W) * A * (1 - A)
            new[i] = (W - prob.lr * dW, b - prob.lr * db)
        return new, loss

    return epoch


def make_peers(index: int, dtype: str) -> dict:
    sizes, m, lr = SIZES[index]
    jax_prob = make_problem(sizes, m, dtype, None, "jax", None, lr)
    return {"nn_xp jax": NnXp(jax_prob), "jax scan": HandJax(jax_prob, manual=False),
            "jax manual": HandJax(jax_prob, manual=True),
            "nn_xp numpy": NnXp(make_problem(sizes, m, dtype, None, "numpy", None, lr))}


def check_agreement(peers: dict, epochs: int = 3) -> float:
    """Every peer trains ``epochs`` from the same weights; the largest relative gap to nn_xp on NumPy."""
    ends = {}
    for name, peer in peers.items():
        peer.reset()
        peer.run(epochs)
        ends[name] = peer.weights()
        peer.reset()
    worst = 0.0
    for weights in ends.values():
        for (W, b), (Wr, br) in zip(weights, ends["nn_xp numpy"]):
            for a, r in ((W, Wr), (b, br)):
                worst = max(worst, float(np.max(np.abs(a - r) / (np.abs(r) + 1e-3))))
    if worst > 1e-3:
        raise SystemExit(f"the peers disagree after {epochs} epochs: relative gap {worst:.3g}")
    return worst


def timed(peer, epochs: int) -> float:
    gc.collect()
    time.sleep(SETTLE)
    start = time.perf_counter()
    peer.run(epochs)
    return (time.perf_counter() - start) / epochs


def case(index: int, dtype: str, rounds: int) -> dict:
    peers = make_peers(index, dtype)
    gap = check_agreement(peers)
    for peer in peers.values():  # warm-up: JAX compiles
        timed(peer, 1)
    # every JAX peer runs the same epochs per timed run, a power of two (JAX compiles once per count), about
    # RUN_SECONDS of the hand-written loop; nn_xp on NumPy about RUN_SECONDS of its own
    per_epoch = timed(peers["jax scan"], 1)  # compiled for one epoch: an upper bound of an epoch's cost
    if per_epoch * 256 < 2.0:  # small networks: one epoch is mostly a call's cost; time 256 (compiled first)
        timed(peers["jax scan"], 256)
        per_epoch = timed(peers["jax scan"], 256)
    count = 1 << (max(2, min(MAX_EPOCHS, int(RUN_SECONDS / per_epoch))).bit_length() - 1)  # >= 2 per fit
    timed(peers["nn_xp numpy"], 2)
    numpy_count = max(2, min(MAX_EPOCHS, int(RUN_SECONDS / timed(peers["nn_xp numpy"], 2))))
    epochs = {name: numpy_count if name == "nn_xp numpy" else count for name in peers}
    for name, peer in peers.items():
        timed(peer, epochs[name])
    names, times = list(peers), {name: [] for name in peers}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(timed(peers[name], epochs[name]))
    return {"times": times, "epochs": epochs, "gap": gap}


def summarize(index: int, result: dict) -> dict:
    times = result["times"]
    hand = [min(a, b) for a, b in zip(times["jax scan"], times["jax manual"])]
    vs_hand = [a / h for a, h in zip(times["nn_xp jax"], hand)]
    vs_numpy = [n / a for a, n in zip(times["nn_xp jax"], times["nn_xp numpy"])]
    target = TARGET_HAND.get(index, TARGET_HAND_OTHERS)
    speedup = TARGET_NUMPY_SPEEDUP.get(index)
    ok = statistics.median(vs_hand) <= target and (speedup is None or statistics.median(vs_numpy) >= speedup)
    best = min(times["nn_xp jax"]) / min(hand)  # the fastest runs: what a shared machine's load blurs least
    return {"medians": {k: statistics.median(v) for k, v in times.items()}, "hand": statistics.median(hand),
            "vs_hand": vs_hand, "vs_numpy": vs_numpy, "best": best, "target": target, "speedup": speedup,
            "ok": ok}


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def fmt_ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.2f}-{max(values):.2f})"


def report(rows: list[tuple[int, dict, dict]], dtype: str, rounds: int) -> str:
    import jax

    import nn_xp

    lines = [f"nn_xp {nn_xp.__version__}, jax {jax.__version__} on {jax.devices()[0]}, "
             f"numpy {np.__version__}; {dtype}, full-batch SGD, {rounds} interleaved rounds; "
             "seconds per epoch (median over rounds),",
             "ratios paired within each round: median (range)", "",
             "| network | nn_xp jax | jax scan | jax manual | nn_xp numpy | nn_xp jax ÷ hand-written JAX "
             "| (fastest ÷ fastest) | nn_xp numpy ÷ nn_xp jax | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for index, _, s in rows:
        sizes, m, _ = SIZES[index]
        med = s["medians"]
        target = f"≤ {s['target']}×" + (f", ≥ {s['speedup']}× NumPy" if s["speedup"] else "")
        lines.append(f"| {size_name(sizes, m)} | {fmt_time(med['nn_xp jax'])} | {fmt_time(med['jax scan'])} "
                     f"| {fmt_time(med['jax manual'])} | {fmt_time(med['nn_xp numpy'])} "
                     f"| {fmt_ratio(s['vs_hand'])} | {s['best']:.3f} | {fmt_ratio(s['vs_numpy'])} | {target} "
                     f"| {'yes' if s['ok'] else 'NO'} |")
    lines.append("")
    lines.append("epochs per timed run: " + "; ".join(
        f"{size_name(*SIZES[i][:2])}: " + ", ".join(f"{k} {v}" for k, v in r["epochs"].items())
        for i, r, _ in rows))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--sizes", default=None, help="indices into bench.SIZES, comma-separated")
    parser.add_argument("--quick", action="store_true", help="the first two sizes, 3 rounds")
    args = parser.parse_args(argv)
    if args.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    indices = [0, 1] if args.quick else (list(range(len(SIZES))) if args.sizes is None
                                         else [int(i) for i in args.sizes.split(",")])
    rounds = 3 if args.quick else args.rounds
    rows = []
    for index in indices:
        sizes, m, _ = SIZES[index]
        print(f"[{time.strftime('%H:%M:%S')}] {size_name(sizes, m)}", file=sys.stderr, flush=True)
        result = case(index, args.dtype, rounds)
        rows.append((index, result, summarize(index, result)))
    print(report(rows, args.dtype, rounds))


if __name__ == "__main__":
    main()
