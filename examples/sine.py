"""The blog's example: fit y = sin(x) on [-5, 5) with a 1-20-1 network (sigmoid hidden layer).

Runs on the default backend (NN_XP_BACKEND, else CuPy when a GPU answers, else
NumPy). ``--blog-weights`` starts from the blog program's own initial weights
(numpy.random.seed(0), 0.2 * randn), which reproduces its losses in float64:
0.0130985534 after 2000 epochs and 0.0048015388 after 20000.

    python examples/sine.py                  # 20000 epochs, float64, blog weights
    python examples/sine.py --epochs 2000 --backend numpy --out sine.png
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import nn_xp


def blog_weights() -> list[tuple[np.ndarray, np.ndarray]]:
    rs = np.random.RandomState(0)
    weights = []
    for n_in, n_out in [(1, 20), (20, 1)]:
        W = 0.2 * rs.randn(n_out, n_in)  # the blog draws W, then b, per layer
        b = 0.2 * rs.randn(n_out, 1)
        weights.append((W, b[:, 0]))
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20000)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--backend", default=None, help="numpy, cupy, torch, array_api_strict or auto")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--seed-init", action="store_true",
                        help="use nn_xp's seeded Glorot start instead of the blog's weights")
    parser.add_argument("--out", default="sine.png", help="PNG to write when matplotlib is installed")
    args = parser.parse_args()

    X = np.arange(-5.0, 5.0, 0.1).reshape(-1, 1)  # (100, 1): the blog's samples, as rows
    Y = np.sin(X)
    net = nn_xp.Network([1, 20, 1], ["sigmoid", "identity"], loss="mse", backend=args.backend,
                        device=args.device, dtype=args.dtype, seed=0)
    if not args.seed_init:
        net.set_weights(blog_weights())
    print(f"{net}")

    every = max(args.epochs // 10, 1)

    def report(epoch: int, logs: dict) -> None:  # the blog's hook
        if epoch % every == 0:
            print(f"epoch: {epoch}, error: {logs['loss']:.10f}")

    start = time.perf_counter()
    history = net.fit(X, Y, epochs=args.epochs, learning_rate=args.learning_rate, callbacks=report)
    seconds = time.perf_counter() - start
    final = net.loss(X, Y)
    print(f"epoch: {args.epochs}, error: {final:.10f}")
    print(f"trained {args.epochs} epochs in {seconds:.2f} s ({seconds / args.epochs * 1e6:.1f} µs/epoch) "
          f"on {net.backend}")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'nn_xp[examples]')")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(X[:, 0], Y[:, 0], "b", label="target sin(x)")
    ax1.plot(X[:, 0], net.predict(X)[:, 0], "r", label="network output")
    ax1.set_xlabel("x")
    ax1.legend(loc="upper right")
    ax1.set_title(f"1-20-1 network after {args.epochs} epochs")
    ax2.semilogy(history.epoch, history.history["loss"])
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("loss 0.5·‖A−Y‖²/m")
    ax2.set_title(f"final loss {final:.6g}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
