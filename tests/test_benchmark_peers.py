"""The benchmark's peers train their own copies: the shared starting weights stay as drawn (issue 20.5)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
bench = pytest.importorskip("bench")


@pytest.mark.parametrize("name", ["nn_xp", "tuned", "plain", "torch", "sklearn"])
@pytest.mark.parametrize("sizes, batch", [((1, 20, 1), None), ((4, 8, 3), None), ((4, 8, 3), 16)])
def test_a_peer_leaves_the_shared_starting_weights_untouched(name, sizes, batch):
    pytest.importorskip({"torch": "torch", "sklearn": "sklearn"}.get(name, "numpy"))
    prob = bench.make_problem(sizes, 64, "float64", batch, "numpy", None)
    start = [(W.copy(), b.copy()) for W, b in prob.weights]
    peer = bench.PEERS[name](prob)
    peer.run(3)
    peer.reset()
    peer.run(2)
    assert bench._untouched(prob.weights, start), f"{name} trained the shared starting weights in place"


def test_a_gpu_run_never_overwrites_the_cpu_report():
    """Issue 17, item 8: ``--gpu`` (and any accelerator backend) writes its own report by default."""
    assert bench.parse_args(["--gpu"]).out.endswith("docs/benchmarks-gpu.md")
    assert bench.parse_args(["--backend", "torch", "--device", "cuda"]).out.endswith("docs/benchmarks-gpu.md")
    assert bench.parse_args([]).out.endswith("docs/benchmarks.md")


@pytest.mark.parametrize("sizes, m", [((1, 20, 1), 37), ((4, 16, 3), 50), ((5, 16, 12, 2), 3000)])
def test_the_predict_peers_compute_the_same_outputs(sizes, m):
    """Issue 20: the predict table compares like with like (tuned NumPy's ping-pong buffers, torch, nn_xp)."""
    pytest.importorskip("torch")
    inference = bench.inference
    peers, X = inference._peers(sizes, m, "float64", True)
    outputs = [np.asarray(p()) for p in peers]
    for p, out in zip(peers, outputs):
        assert out.shape == (m, sizes[-1]), p.name
        np.testing.assert_allclose(out, outputs[0], rtol=1e-12, atol=1e-12, err_msg=p.name)
    assert np.shares_memory(peers[1](), outputs[1]) is False  # tuned's result outlives its buffers
