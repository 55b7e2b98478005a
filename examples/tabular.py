"""Tabular classification: malignant or benign, from 30 measurements of a breast-tissue sample.

The 569 samples are scikit-learn's ``load_breast_cancer`` (UCI's Breast Cancer Wisconsin (Diagnostic), CC
BY 4.0), shipped beside this example in ``examples/data/breast_cancer.npz``: no download, no scikit-learn
needed. 212 are malignant, 357 benign, so the example weighs the classes (``class_weight="balanced"``),
regularises a 30-32-16-1 network with dropout, lowers the learning rate when the held-out loss stops
improving (:class:`nn_xp.ReduceLROnPlateau`), stops early keeping the best weights
(:class:`nn_xp.EarlyStopping`), prints a summary, the metrics of every tenth epoch, the held-out
confusion counts, and plots the curves (``History.plot``, with matplotlib).

The features are standardised with the training part's mean and deviation; a fifth of the samples,
drawn stratified with NumPy, is held out and passed as ``validation_data``: it drives the plateau and
early-stopping callbacks, so its figures are optimistic; a real study keeps a third part untouched.

    python examples/tabular.py                          # default backend, tabular.png
    python examples/tabular.py --backend torch --epochs 100 --out /tmp/tabular.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import nn_xp

DATA = Path(__file__).resolve().parent / "data" / "breast_cancer.npz"


def load() -> tuple[np.ndarray, np.ndarray]:
    """``(569, 30)`` measurements and labels, 1 for malignant (scikit-learn's 0) and 0 for benign."""
    with np.load(DATA) as data:
        return data["data"], (data["target"] == 0).astype(np.int64)


def split(y: np.ndarray, held: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a stratified split: ``held`` of each class held out, shuffled."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        out[rows[:round(held * len(rows))]] = True
    return rng.permutation(np.flatnonzero(~out)), rng.permutation(np.flatnonzero(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, help="numpy, cupy, torch, jax, array_api_strict or auto")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="tabular.png", help="PNG to write when matplotlib is installed")
    args = parser.parse_args()

    X, y = load()
    train, test = split(y, 0.2, args.seed)
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    X = (X - mean) / std  # standardised with the training part's statistics only

    net = nn_xp.Network([30, 32, 16, 1], "relu", loss="binary_cross_entropy", dropout=args.dropout,
                        backend=args.backend, device=args.device, dtype=args.dtype, seed=args.seed)
    print(net.summary(batch_size=args.batch_size))

    def report(epoch: int, logs: dict) -> None:
        if epoch % 10 == 0:
            print(f"epoch {epoch:4d}  " + "  ".join(f"{k} {v:.4f}" for k, v in logs.items()))

    callbacks = [nn_xp.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=10, min_lr=1e-5),
                 nn_xp.EarlyStopping(monitor="val_loss", patience=30, restore_best_weights=True), report]
    history = net.fit(X[train], y[train], epochs=args.epochs, optimizer=nn_xp.Adam(1e-3),
                      batch_size=args.batch_size, class_weight="balanced", metrics=["accuracy"],
                      validation_data=(X[test], y[test]), callbacks=callbacks, verbose=0)

    predicted = net.predict_classes(X[test])
    truth = y[test]
    tp = int(np.sum((predicted == 1) & (truth == 1)))
    fn = int(np.sum((predicted == 0) & (truth == 1)))
    fp = int(np.sum((predicted == 1) & (truth == 0)))
    tn = int(np.sum((predicted == 0) & (truth == 0)))
    print(f"trained {len(history)} epochs on {net.backend}; held-out accuracy {(tp + tn) / len(truth):.4f}, "
          f"malignant found {tp} of {tp + fn} (recall {tp / max(tp + fn, 1):.4f}), "
          f"benign called malignant {fp} of {fp + tn}")

    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'nn_xp[examples]')")
        return
    figure = history.plot()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
