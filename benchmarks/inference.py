"""Predict and the torch backend, for ``bench.py`` (issue 20): the tables "Predict" and "nn_xp on torch".

Predict: nn_xp's ``predict`` against tuned NumPy (two buffers of ``(m, widest)`` ping-ponged through the
layers, ``out=`` everywhere, allocated per call as a function must) and PyTorch (``addmm`` and
``sigmoid`` under ``no_grad``), on the same weights and rows. Warm: calls back to back. Cold: a pause
before each call, long enough for the allocator to have handed its memory back (here a virtual machine
that returns freed pages to the host), so a call that allocates much pays its page faults again. The peak
is counted exactly with tracemalloc (NumPy reports its buffers there; not torch).

The torch backend: nn_xp with ``backend="torch"`` against ``peers.TorchManual`` (idiomatic hand-written
torch: ``addmm``, ``torch.sigmoid``, ``sum``, ``add_``), full batch, every size.
"""
from __future__ import annotations

import gc
import statistics
import time
import tracemalloc

import numpy as np

#: (layer sizes, rows): the blog's network on a tiny call, then the sizes where predict's memory shows
PREDICT_CASES = [((1, 20, 1), 100), ((64, 256, 256, 10), 262144), ((784, 1024, 1024, 10), 65536)]


class NnXpPredict:
    name = "nn_xp"

    def __init__(self, net, X) -> None:
        self.net, self.X = net, X

    def __call__(self):
        return self.net.predict(self.X)


class TunedPredict:
    """Two ``(m, widest)`` buffers, each layer's product into the other one, activated in place."""

    name = "tuned"

    def __init__(self, net, X) -> None:
        self.W = [W for W, _ in net.get_weights()]
        self.b = [b for _, b in net.get_weights()]
        self.WT = [W.T for W in self.W]
        self.X = X

    def __call__(self):
        m, widest = self.X.shape[0], max(W.shape[0] for W in self.W)
        bufs = [np.empty(m * widest, dtype=self.X.dtype) for _ in range(2)]
        a = self.X
        last = len(self.W) - 1
        for i, (WT, b) in enumerate(zip(self.WT, self.b)):
            z = bufs[i % 2][:m * WT.shape[1]].reshape(m, WT.shape[1])
            if a.shape[1] == 1:
                np.multiply(a, WT, out=z)
            else:
                np.matmul(a, WT, out=z)
            z += b
            if i < last:  # sigmoid, in place (tanh form: no overflow)
                z *= 0.5
                np.tanh(z, out=z)
                z *= 0.5
                z += 0.5
            a = z
        return a.copy() if a.base is not None else a  # the result outlives the buffers


class TorchPredict:
    name = "torch"

    def __init__(self, net, X) -> None:
        import torch

        self.torch = torch
        self.W = [torch.from_numpy(W.copy()) for W, _ in net.get_weights()]
        self.b = [torch.from_numpy(b.copy()) for _, b in net.get_weights()]
        self.X = torch.from_numpy(X)

    def __call__(self):
        torch = self.torch
        with torch.no_grad():
            a = self.X
            for i, (W, b) in enumerate(zip(self.W, self.b)):
                a = torch.addmm(b, a, W.T)
                if i < len(self.W) - 1:
                    a = torch.sigmoid(a)
        return a.numpy()


def _peers(sizes, m, dtype, with_torch: bool):
    import nn_xp

    rng = np.random.default_rng(0)
    L = len(sizes) - 1
    net = nn_xp.Network(list(sizes), ["sigmoid"] * (L - 1) + ["identity"], backend="numpy", dtype=dtype)
    X = rng.standard_normal((m, sizes[0])).astype(dtype)
    peers = [NnXpPredict(net, X), TunedPredict(net, X)]
    if with_torch:
        peers.append(TorchPredict(net, X))
    return peers, X


def _time(peer, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        peer()
    return (time.perf_counter() - t0) / calls


def _traced_peak(peer) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        peer()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def predict_case(sizes, m, dtype, rounds: int, pause: float, with_torch: bool) -> dict:
    """Warm and cold seconds per call for each peer (interleaved rounds), and each NumPy peer's peak."""
    peers, X = _peers(sizes, m, dtype, with_torch)
    ref = peers[1]()
    agree = {p.name: float(np.max(np.abs(np.asarray(p()) - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
             for p in peers}
    for p in peers:
        p()  # first-call costs
    one = max(_time(p, 1) for p in peers)
    calls = max(1, min(2000, int(0.2 / max(one, 1e-7))))
    warm = {p.name: [] for p in peers}
    cold = {p.name: [] for p in peers}
    for r in range(rounds):
        order = peers[r % len(peers):] + peers[:r % len(peers)]
        for p in order:
            warm[p.name].append(_time(p, calls))
        if m >= 10000:  # a cold call means something only where the call allocates much
            for p in order:
                time.sleep(pause)
                cold[p.name].append(_time(p, 1))
    out = {"sizes": list(sizes), "m": m, "dtype": dtype, "calls": calls, "rounds": rounds, "peers": {}}
    item = np.dtype(dtype).itemsize
    out["bound"] = {"data": X.nbytes, "output": m * sizes[-1] * item,
                    "two_widths": 2 * m * max(sizes[1:]) * item}
    for p in peers:
        res = {"warm": statistics.median(warm[p.name]), "warm_samples": warm[p.name],
               "agree": agree[p.name]}
        if cold[p.name]:
            res["cold"], res["cold_samples"] = statistics.median(cold[p.name]), cold[p.name]
        if p.name != "torch":
            res["traced_peak"] = _traced_peak(p)
        out["peers"][p.name] = res
    return out


def torch_backend_case(make_problem, peers_module, time_case, sizes, m, lr, rounds, round_s, settle) -> dict:
    """nn_xp on torch against idiomatic hand-written torch, full batch, float32."""
    prob = make_problem(sizes, m, "float32", None, "torch", None, lr)
    peers = [peers_module.PEERS["nn_xp"](prob), peers_module.PEERS["torch"](prob)]
    return {"sizes": list(sizes), "m": m, "dtype": "float32",
            "timing": time_case(peers, rounds, round_s, settle)}
