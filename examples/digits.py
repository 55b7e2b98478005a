"""Classify the 8x8 digits with a small softmax network, next to scikit-learn's MLPClassifier.

The 1797 images are scikit-learn's ``load_digits`` (the test set of UCI's Optical Recognition of
Handwritten Digits, CC BY 4.0), shipped beside this example in ``examples/data/digits.npz``: no download,
and no scikit-learn needed for them. They are split 75/25, stratified. nn_xp's low-level API trains a
64-64-10 network (ReLU, softmax, cross-entropy) with Adam on shuffled mini-batches, on the default
backend (NN_XP_BACKEND, else CuPy when a GPU answers, else NumPy); the held-out quarter is passed as
``validation_data`` only to draw its loss curve, never to choose anything. scikit-learn's
MLPClassifier gets the same architecture, optimizer, batch size and epoch budget on the same split.

Without scikit-learn (a GPU machine may not have it) the example says so and runs nn_xp alone: no
comparison column, and the stratified split is drawn with NumPy instead of scikit-learn's
``train_test_split`` (the same proportions, other images, so a slightly different accuracy).

    python examples/digits.py                          # default backend, digits.png
    python examples/digits.py --backend numpy --epochs 50 --out /tmp/digits.png
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

import nn_xp

try:  # only the comparison column (and the split it shares) needs scikit-learn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
except ImportError:
    MLPClassifier = None

DATA = Path(__file__).resolve().parent / "data" / "digits.npz"


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8x8 images as ``(1797, 64)`` intensities 0..16, and their labels 0..9."""
    with np.load(DATA) as data:
        return data["data"].astype(np.float64), data["target"].astype(np.int64)


def split(X: np.ndarray, y: np.ndarray, seed: int) -> list[np.ndarray]:
    """75/25, stratified: scikit-learn's ``train_test_split`` where installed, else drawn with NumPy."""
    if MLPClassifier is not None:
        return train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        held[rows[:round(0.25 * len(rows))]] = True
    train, test = rng.permutation(np.flatnonzero(~held)), rng.permutation(np.flatnonzero(held))
    return [X[train], X[test], y[train], y[test]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, help="numpy, cupy, torch, array_api_strict or auto")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="digits.png", help="PNG to write when matplotlib is installed")
    args = parser.parse_args()

    X, y = load_digits()
    X = X / 16.0  # pixel intensities 0..16 -> [0, 1]
    X_train, X_test, y_train, y_test = split(X, y, args.seed)

    net = nn_xp.Network([64, args.hidden, 10], ["relu", "softmax"], loss="cross_entropy",
                        backend=args.backend, device=args.device, dtype=args.dtype, seed=args.seed)
    print(net)
    start = time.perf_counter()
    history = net.fit(X_train, y_train, epochs=args.epochs, optimizer=nn_xp.Adam(args.learning_rate),
                      batch_size=args.batch_size, validation_data=(X_test, y_test))
    nn_seconds = time.perf_counter() - start
    nn_accuracy = float(np.mean(net.predict_classes(X_test) == y_test))

    print(f"{'':24}{'held-out accuracy':>18}{'fit time':>10}{'epochs':>8}")
    print(f"{'nn_xp (' + net.backend.name + ')':24}{nn_accuracy:>18.4f}{nn_seconds:>9.2f}s{len(history):>8}")
    if MLPClassifier is None:
        print("scikit-learn is not installed: no comparison column, and the split was drawn with NumPy "
              "(pip install scikit-learn, or nn_xp[examples], for both)")
        plot(history, None, nn_accuracy, None, net.backend.name, args.out)
        return
    sk = MLPClassifier((args.hidden,), batch_size=args.batch_size, learning_rate_init=args.learning_rate,
                       max_iter=args.epochs, random_state=args.seed)
    start = time.perf_counter()
    with warnings.catch_warnings():  # it may stop before max_iter, or warn that it did not
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X_train, y_train)
    sk_seconds = time.perf_counter() - start
    sk_accuracy = sk.score(X_test, y_test)
    print(f"{'scikit-learn':24}{sk_accuracy:>18.4f}{sk_seconds:>9.2f}s{sk.n_iter_:>8}")
    plot(history, sk, nn_accuracy, sk_accuracy, net.backend.name, args.out)


def plot(history: nn_xp.History, sk: MLPClassifier | None, nn_accuracy: float, sk_accuracy: float | None,
         backend: str, out: str) -> None:
    """Loss and accuracy per epoch; scikit-learn's curves and score where it ran (``sk`` not None)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    epochs = np.arange(1, len(history) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(epochs, history["loss"], label=f"nn_xp ({backend}) training loss")
    left.plot(epochs, history["val_loss"], label="nn_xp held-out loss")
    if sk is not None:
        left.plot(np.arange(1, sk.n_iter_ + 1), sk.loss_curve_, "--",
                  label="scikit-learn training loss (+ L2 term)")
    left.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="Loss per epoch")
    left.legend()
    right.plot(epochs, history["accuracy"], label="nn_xp training accuracy")
    right.plot(epochs, history["val_accuracy"], label="nn_xp held-out accuracy")
    title = f"8x8 digits: nn_xp {nn_accuracy:.4f}"
    if sk is not None:
        right.axhline(sk_accuracy, color="gray", linestyle="--",
                      label=f"scikit-learn held-out ({sk_accuracy:.4f})")
        title += f" vs scikit-learn {sk_accuracy:.4f}"
    right.set(xlabel="epoch", ylabel="accuracy", ylim=(0.85, 1.0), title=title)
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
