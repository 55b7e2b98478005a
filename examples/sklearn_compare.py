"""nn_xp.sklearn.MLPClassifier next to scikit-learn's MLPClassifier: same data, same parameters.

Both are the last step of a ``StandardScaler`` pipeline and get identical
scikit-learn parameters, once per solver (Adam and L-BFGS by default), each
also with uneven sample weights (``fit(X, y, sample_weight=w)``, the same
weights for both, drawn from ``--seed``; the held-out accuracy is then weighted
by the held-out rows' weights). nn_xp's trains on ``--backend`` (default:
nn_xp's auto, CuPy when a GPU answers, else NumPy). Prints held-out accuracy,
fit and predict times and iterations side by side, and plots the loss curves
when matplotlib is installed (scikit-learn keeps none for lbfgs).

    python examples/sklearn_compare.py                                  # the 8x8 digits
    python examples/sklearn_compare.py --solvers sgd adam lbfgs --sample-weight none
    python examples/sklearn_compare.py --data synthetic --n-samples 50000 --dtype float32 --backend cupy
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SklearnMLP
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nn_xp.sklearn import MLPClassifier


def load(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    if args.data == "digits":
        X, y = load_digits(return_X_y=True)
        return X, y, "8x8 digits"
    X, y = make_classification(n_samples=args.n_samples, n_features=40, n_informative=20, n_classes=5,
                               random_state=args.seed)
    return X, y, f"make_classification ({args.n_samples} samples, 40 features, 5 classes)"


def timed_fit(model, X, y, sample_weight=None):
    # a pipeline hands fit parameters to a step by its name: the classifier's, the last
    weighted = {} if sample_weight is None else {f"{model.steps[-1][0]}__sample_weight": sample_weight}
    start = time.perf_counter()
    with warnings.catch_warnings():  # reaching max_iter is expected here
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y, **weighted)
    return time.perf_counter() - start


def compare(args: argparse.Namespace, params: dict, data: tuple, weights: tuple | None) -> list:
    """Each solver's nn_xp and scikit-learn pipelines, fitted and scored on the same data (and weights):
    ``(label, accuracy, fit seconds, predict seconds, iterations, classifier)`` rows."""
    X_train, X_test, y_train, y_test = data
    w_train, w_test = weights or (None, None)
    rows = []
    for solver in args.solvers:
        ours = make_pipeline(StandardScaler(), MLPClassifier(**params, solver=solver, backend=args.backend,
                                                             device=args.device))
        theirs = make_pipeline(StandardScaler(), SklearnMLP(**params, solver=solver))
        for label, model in ((None, ours), ("scikit-learn", theirs)):
            fit_seconds = timed_fit(model, X_train, y_train, w_train)
            start = time.perf_counter()
            accuracy = model.score(X_test, y_test, sample_weight=w_test)
            predict_seconds = time.perf_counter() - start
            clf = model[-1]
            label = label or f"nn_xp ({clf.network_.backend.name}, {clf.network_.dtype_name})"
            label = f"{label}, {solver}" + (", sample_weight" if weights else "")
            rows.append((label, accuracy, fit_seconds, predict_seconds, clf.n_iter_, clf))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, help="numpy, cupy, torch, array_api_strict or auto")
    parser.add_argument("--device", default=None)
    parser.add_argument("--data", default="digits", choices=["digits", "synthetic"])
    parser.add_argument("--n-samples", type=int, default=20000, help="for --data synthetic")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                        help="the data's dtype: both estimators train in it")
    parser.add_argument("--solvers", nargs="+", default=["adam", "lbfgs"], choices=["adam", "sgd", "lbfgs"])
    parser.add_argument("--sample-weight", default="both", choices=["both", "none", "uneven"],
                        help="fit without weights, with uneven ones (uniform in [0.2, 3]), or both")
    parser.add_argument("--hidden", type=int, nargs="+", default=[100])
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--learning-rate-init", type=float, default=1e-3)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--early-stopping", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="sklearn_compare.png",
                        help="PNG to write when matplotlib is installed")
    args = parser.parse_args()

    X, y, name = load(args)
    X = X.astype(args.dtype)
    w = np.random.default_rng(args.seed).uniform(0.2, 3.0, size=len(y))  # one weight per sample
    X_train, X_test, y_train, y_test, w_train, w_test = train_test_split(X, y, w, test_size=0.25, stratify=y,
                                                                         random_state=args.seed)
    params = dict(hidden_layer_sizes=tuple(args.hidden), batch_size=args.batch_size,
                  learning_rate_init=args.learning_rate_init, max_iter=args.max_iter,
                  early_stopping=args.early_stopping, random_state=args.seed)
    data = (X_train, X_test, y_train, y_test)
    rows = []
    for weights in {"both": (None, (w_train, w_test)), "none": (None,),
                    "uneven": ((w_train, w_test),)}[args.sample_weight]:
        rows += compare(args, params, data, weights)

    print(f"{name}: {len(y_train)} training, {len(y_test)} held-out samples; parameters {params}")
    print("with sample_weight: the held-out accuracy weighted by the held-out rows' weights")
    print(f"{'':53}{'accuracy':>10}{'fit':>10}{'predict':>10}{'iterations':>12}")
    for label, accuracy, fit_seconds, predict_seconds, n_iter, _ in rows:
        print(f"{label:53}{accuracy:>10.4f}{fit_seconds:>9.2f}s{predict_seconds:>9.3f}s{n_iter:>12}")
    plot(rows, name, args.out)


def plot(rows: list, name: str, out: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, accuracy, fit_seconds, _, _, clf in rows:
        if not getattr(clf, "loss_curve_", None):  # scikit-learn's lbfgs keeps no curve
            continue
        ax.plot(np.arange(1, len(clf.loss_curve_) + 1), clf.loss_curve_,
                label=f"{label}: accuracy {accuracy:.4f}, fit {fit_seconds:.2f}s")
    ax.set(xlabel="epoch (iteration for lbfgs)", ylabel="training loss (loss_curve_)", yscale="log",
           title=name)
    ax.legend(fontsize="small", loc="upper right")  # the curves fall from the upper left
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
