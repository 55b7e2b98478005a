"""examples/tabular.py (issue 16's example) runs, learns, and ships scikit-learn's data unchanged."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TABULAR = ROOT / "examples" / "tabular.py"


def test_tabular_example_trains_with_class_weights_dropout_and_plateaus(tmp_path):
    out = tmp_path / "tabular.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NN_XP_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    env["MPLBACKEND"] = "Agg"
    result = subprocess.run([sys.executable, str(TABULAR), "--backend", "numpy", "--epochs", "12",
                             "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in fit: dropout 0.2, 0.2" in result.stdout  # the summary states the dropout
    assert re.search(r"^epoch +10 +loss [0-9.]+ +accuracy [0-9.]+ +val_loss", result.stdout, re.M)
    accuracy = float(re.search(r"held-out accuracy ([0-9.]+)", result.stdout).group(1))
    assert 0.8 < accuracy <= 1.0  # 12 epochs of Adam already separate the classes (63% are benign)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no plot" in result.stdout
    else:
        assert out.stat().st_size > 10_000


def test_breast_cancer_data_are_scikit_learns():
    """The copy shipped in examples/data is exactly ``load_breast_cancer()``."""
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_breast_cancer()
    with np.load(ROOT / "examples" / "data" / "breast_cancer.npz") as data:
        np.testing.assert_array_equal(data["data"], bunch.data)
        np.testing.assert_array_equal(data["target"], bunch.target)
        assert list(data["feature_names"]) == list(bunch.feature_names)
