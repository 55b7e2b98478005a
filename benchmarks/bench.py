"""Time nn_xp against its peers on the same networks, data and starting weights; write docs/benchmarks.md.

The peers (``peers.py``): nn_xp's ``fit``; the blog's equations in plain NumPy;
a tuned NumPy version; PyTorch with the same manual back-propagation; and
scikit-learn's ``MLPRegressor``. Every peer does the same epoch: forward, the
loss ``0.5 ||A - Y||^2 / m`` read back every epoch, back-propagation, plain
gradient descent (full batch) or Adam (mini-batches of 256).

Before any timing, every peer trains a few epochs in float64 from the same
weights and must end at the reference's weights (plain NumPy) within 1e-10.
Peers are then interleaved in one process (rounds of peer1, peer2, ...,
rotated each round, with a pause between runs so that one library's spinning
worker threads do not slow the next), and each reports the median seconds per
epoch over the rounds. Peak memory runs each peer in a fresh subprocess.

    python benchmarks/bench.py                 # the full run (~10 min on 2 cores), writes docs/benchmarks.md
    python benchmarks/bench.py --quick         # ~1 min sanity run, prints the report only
    python benchmarks/bench.py --gpu           # nn_xp on CuPy vs PyTorch CUDA, float32
    python benchmarks/bench.py --profile       # cProfile of nn_xp's fit on the two focus sizes

On machines where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set for old
OpenBLAS builds, unset both for this command only:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench.py``.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import io
import json
import math
import os
import platform
import pstats
import resource
import shlex
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import inference  # noqa: E402
import peers as peers_module  # noqa: E402
from peers import PEERS, Problem  # noqa: E402

#: (layer sizes, samples, full-batch learning rate); the first is the blog's network. Each rate is one at
#: which gradient descent is stable on that network (0.1 diverges on the wide ones, and diverging sigmoids
#: reach denormal floats, whose arithmetic is many times slower: a benchmark of the wrong thing).
SIZES = [((1, 20, 1), 100, 0.1), ((1, 20, 1), 1000, 0.1), ((64, 256, 256, 10), 4096, 0.01),
         ((64, 64, 64, 10), 4096, 0.01), ((784, 1024, 1024, 10), 8192, 0.003)]
CPU_PEERS = ["nn_xp", "tuned", "plain", "torch", "sklearn"]
ACCEL_PEERS = ["nn_xp", "torch"]
LR_ADAM, BATCH = 0.001, 256
SEED, SHUFFLE_SEED = 0, 1
TOLERANCE = 1e-10
NOISY = 0.25  # a case whose spread exceeds this gets as many rounds again
QUICK_SIZES = [0, 2]  # --quick on the CPU: the blog's network and the middle one
ENV_VARS = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "NN_XP_BACKEND", "NN_XP_DEVICE"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def size_name(sizes, m=None) -> str:
    s = "-".join(map(str, sizes))
    return s if m is None else f"{s}, m={m}"


# ------------------------------------------------------------------ problems
def make_problem(sizes, m, dtype, batch_size=None, backend="numpy", device=None, lr=0.1,
                 seed=SEED) -> Problem:
    """Data and float64 starting weights from one ``numpy.random.Generator(seed)``, the same for every
    peer."""
    rng = np.random.default_rng(seed)
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        limit = math.sqrt(6.0 / (n_in + n_out))  # Glorot uniform; small random biases exercise db
        weights.append((rng.uniform(-limit, limit, (n_out, n_in)), rng.uniform(-0.1, 0.1, n_out)))
    if sizes[0] == 1 and sizes[-1] == 1:  # the blog's problem: fit sin on [-pi, pi]
        X = rng.uniform(-math.pi, math.pi, (m, 1))
        Y = np.sin(X)
    else:
        X = rng.standard_normal((m, sizes[0]))
        Y = rng.standard_normal((m, sizes[-1]))
    return Problem(tuple(sizes), X.astype(dtype), Y.astype(dtype), weights,
                   LR_ADAM if batch_size else lr, dtype, batch_size, SHUFFLE_SEED, backend, device)


def flops_per_epoch(sizes, m) -> float:
    """Matrix-product FLOPs: forward, dW for every layer, dA for every layer but the first."""
    prods = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2.0 * m * (2 * sum(prods) + sum(prods[1:]))


def bound_bytes(sizes, m, dtype) -> dict:
    """data + parameters + gradients + one Z and one A per layer (the identity output's A is its Z)."""
    item = np.dtype(dtype).itemsize
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])) * item
    za = m * (2 * sum(sizes[1:-1]) + sizes[-1]) * item
    data = m * (sizes[0] + sizes[-1]) * item
    return {"data": data, "params": params, "grads": params, "za": za, "total": data + 2 * params + za}


# ------------------------------------------------------------------ environment
def threads_and_blas(threads):
    info = []
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        if threads:
            threadpool_limits(threads)
        info = threadpool_info()
    except ImportError:
        pass
    blas = [i for i in info if i.get("user_api") == "blas"]
    n = threads or (blas[0]["num_threads"] if blas else os.cpu_count())
    return n, info


def machine_info(threads: int, pool_info: list, label: str | None = None) -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        mem = f"{mem / 2 ** 20:.0f} GiB"
    except OSError:
        mem = "?"
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("array_api_compat", "torch", "sklearn", "cupy", "threadpoolctl"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "not installed"
    import nn_xp

    where = Path(nn_xp.__file__).resolve().parent.parent
    versions["nn_xp"] = nn_xp.__version__ + (f" ({label})" if label else _git_commit() if where == ROOT
                                             else f" (from {where})")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "platform": platform.platform(),
            "versions": versions, "threads": threads,
            "env": {k: os.environ.get(k, "not set") for k in ENV_VARS},
            "pools": [{k: i.get(k)
                       for k in ("internal_api", "version", "architecture", "num_threads", "prefix")}
                      for i in pool_info]}


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "nn_xp"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f" (commit {head}{', nn_xp/ modified' if dirty else ''})" if head else ""
    except Exception:
        return ""


def set_torch_threads(n: int) -> None:
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def available_peers(names: list[str]) -> tuple[list[str], dict]:
    missing = {}
    ok = []
    for name in names:
        module = {"torch": "torch", "sklearn": "sklearn"}.get(name)
        if module:
            try:
                __import__(module)
            except ImportError:
                missing[name] = f"{module} is not installed"
                continue
        ok.append(name)
    return ok, missing


# ------------------------------------------------------------------ timing
#: the square products whose best median rate is "the measured matrix-product peak"
PEAK_SIZES = (1024, 2048, 3072)
#: the ones timed again in every round of every case (the largest two: the best rate here is at 2048 or 3072)
ROUND_PEAK_SIZES = (2048, 3072)


def matmul_peak(kind: str, dtype: str, device=None, reps: int = 5, sizes=PEAK_SIZES) -> float:
    """Median GFLOP/s of square matrix products, best over a few sizes (the BLAS's useful peak)."""
    best = 0.0
    for n in sizes:
        if kind == "numpy":
            a = np.ones((n, n), dtype)
            b = np.ones((n, n), dtype)
            out = np.empty((n, n), dtype)
            f, sync = (lambda a=a, b=b, out=out: np.matmul(a, b, out=out)), (lambda: None)
        elif kind == "torch":
            import torch

            a = torch.ones((n, n), dtype=getattr(torch, dtype), device=device)
            b = torch.ones_like(a)
            out = torch.empty_like(a)
            f = lambda a=a, b=b, out=out: torch.mm(a, b, out=out)  # noqa: E731
            sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
        else:  # cupy
            import cupy

            a = cupy.ones((n, n), dtype)
            b = cupy.ones((n, n), dtype)
            out = cupy.empty((n, n), dtype)
            f, sync = (lambda a=a, b=b, out=out: cupy.matmul(a, b, out=out)), cupy.cuda.Device().synchronize
        f()
        sync()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            sync()
            times.append(time.perf_counter() - t0)
        best = max(best, 2.0 * n ** 3 / statistics.median(times) / 1e9)
    return best


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed(peer, epochs: int) -> float:
    """Seconds for ``epochs`` epochs in the steady state: from the starting weights (reset), after one untimed
    epoch. That epoch touches the memory the peer allocates: on virtual machines that hand freed memory back
    to the host (virtio-balloon free page reporting, as here), a large array allocated after a pause of a few
    seconds costs many times the same array in a loop, and the other peers' runs are such a pause."""
    peer.reset()
    peer.run(1)
    peer.sync()
    t0 = time.perf_counter()
    peer.run(epochs)
    peer.sync()
    return time.perf_counter() - t0


def time_case(peers: list, rounds: int, round_s: float, settle: float, peak=None) -> dict:
    """Interleaved rounds; each run is ``k`` epochs (the same ``k`` for every peer), reported per epoch.

    ``peak()``, if given, measures the matrix-product peak (GFLOP/s) once per round, among the peers: a
    shared, noisy machine changes speed from minute to minute, and a percent of peak means something only
    against a peak measured under the same conditions."""
    est = {}
    for p in peers:
        _timed(p, 1)  # warm-up: first-call costs, BLAS buffers, allocator pools
        n, t = 1, _timed(p, 1)
        while t < 0.05 and n < 1 << 16:
            n = min(1 << 16, max(2 * n, int(0.06 * n / max(t, 1e-9))))
            t = _timed(p, n)
        est[p.name] = t / n
        time.sleep(settle)
    per_epoch = statistics.median(est.values())
    k = max(2, round(round_s / per_epoch))  # at least 2: nn_xp's and sklearn's per-fit checks are shared
    if k * per_epoch * len(peers) > 4.0:  # expensive rounds: fewer of them (a noisy case still gets more)
        rounds = max(3, rounds - 2)
    samples = {p.name: [] for p in peers}
    faults = {p.name: [] for p in peers}
    peaks = []
    done = 0
    while done < rounds or (done < 2 * rounds and _spread(samples) > NOISY):  # a noisy case gets more rounds
        order = peers[done % len(peers):] + peers[:done % len(peers)]
        for p in order:
            time.sleep(settle)
            f0 = _faults()
            samples[p.name].append(_timed(p, k) / k)
            faults[p.name].append((_faults() - f0) / k)
        if peak is not None:
            time.sleep(settle)
            peaks.append(peak())
        done += 1
    out = {}
    for name, ts in samples.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        out[name] = {"median": statistics.median(ts), "q1": q[0], "q3": q[2], "min": min(ts), "max": max(ts),
                     "faults": statistics.median(faults[name]), "samples": ts}
    timing = {"k": k, "rounds": done, "peers": out}
    if peaks:
        timing["peak"] = statistics.median(peaks)
    return timing


def case_peak(case: dict, res: dict) -> float:
    """The peak a case's percentages are against: measured in its own rounds (older results: the run's
    best)."""
    return case["timing"].get("peak") or max(res["peak_runs"][case["dtype"]])


def paired_ratios(a: dict, b: dict) -> list[float]:
    """``a``'s time over ``b``'s, round by round (the two ran minutes apart at most, under the same load)."""
    return [x / y for x, y in zip(a.get("samples", []), b.get("samples", []))]


def _ratio_cell(a: dict, b: dict) -> str:
    ratios = paired_ratios(a, b)
    if len(ratios) < 2:  # an older result without samples: the ratio of the medians
        return f"{a['median'] / b['median']:.2f}"
    q = statistics.quantiles(ratios, n=4)
    return f"{statistics.median(ratios):.2f} ({q[0]:.2f}–{q[2]:.2f})"


def _spread(samples: dict) -> float:
    """The largest interquartile range over the peers, relative to its median."""
    worst = 0.0
    for ts in samples.values():
        if len(ts) > 1:
            q = statistics.quantiles(ts, n=4)
            worst = max(worst, (q[2] - q[0]) / statistics.median(ts))
    return worst


# ------------------------------------------------------------------ agreement
def agreement(peer_names: list[str], backend: str, device) -> list[dict]:
    """Each peer's weights after a few float64 epochs vs the plain-NumPy reference, relative to the
    largest weight."""
    rows = []
    checks = [((1, 20, 1), 100, None, 5), ((4, 16, 16, 3), 64, None, 5), ((4, 16, 16, 3), 64, 16, 3)]
    for sizes, m, bs, epochs in checks:
        prob = make_problem(sizes, m, "float64", bs, backend, device)
        start = [(W.copy(), b.copy()) for W, b in prob.weights]
        ref = PEERS["plain"](prob)
        ref.run(epochs)
        wref = ref.weights()
        case = f"{size_name(sizes, m)}, " + ("full-batch SGD" if bs is None
                                              else f"Adam, batch {bs}, shuffled")
        for name in peer_names:
            if name == "plain":
                continue
            if name == "sklearn" and bs is not None:
                rows.append({"case": case, "peer": name, "epochs": epochs, "error": None,
                             "note": "skipped: its Adam puts epsilon outside the bias correction, "
                                     "and it shuffles with its own generator"})
                continue
            peer = PEERS[name](prob)
            peer.run(epochs)
            err = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                      for pa, pb in zip(peer.weights(), wref) for a, b in zip(pa, pb))
            kept = _untouched(prob.weights, start)  # every later reset starts from these
            rows.append({"case": case, "peer": name, "epochs": epochs, "error": err,
                         "note": ("ok" if err <= TOLERANCE else "MISMATCH") if kept
                         else "MUTATED the shared starting weights"})
    return rows


def _untouched(weights: list, start: list) -> bool:
    """Whether a peer left the problem's shared starting weights exactly as they were drawn."""
    return all(np.array_equal(W, W0) and np.array_equal(b, b0) for (W, b), (W0, b0) in zip(weights, start))


# ------------------------------------------------------------------ memory (subprocess)
def _status_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _warm_up(spec: dict) -> None:
    """Load what the peer loads lazily (modules, thread pools, first-call caches), so the baseline
    includes it."""
    n_threads, _ = threads_and_blas(spec["threads"])
    set_torch_threads(n_threads)
    tiny = make_problem((2, 3, 2), 8, spec["dtype"], spec["batch_size"] and 4, spec["backend"],
                        spec["device"])
    PEERS[spec["peer"]](tiny).run(2)
    big = np.ones((1024, 1024), spec["dtype"])
    big @ big  # BLAS touches its packing buffers on the first large product
    if spec["peer"] == "torch" or spec["backend"] == "torch":
        import torch

        t = torch.ones((1024, 1024), dtype=getattr(torch, spec["dtype"]))
        t @ t


def memory_child(spec: dict) -> dict:
    """Run in a fresh process: peak RSS above the pre-training baseline, and RSS across the epochs."""
    _warm_up(spec)
    prob = make_problem(tuple(spec["sizes"]), spec["m"], spec["dtype"], spec["batch_size"], spec["backend"],
                        spec["device"], spec["lr"])
    gc.collect()
    base = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    peer = PEERS[spec["peer"]](prob)
    epochs = spec["epochs"]
    rss = _sample_epochs(peer, epochs, lambda: _status_kb("VmRSS") * 1024)
    peak = _status_kb("VmHWM") if hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_extra": (peak - base) * 1024, "rss": _growth(rss, epochs), "epochs": epochs,
           "hwm_reset": hwm_reset}
    del peer
    gc.collect()
    if spec["peer"] != "torch" and spec["backend"] == "numpy":
        # NumPy reports its buffers to tracemalloc: exact bytes, no allocator noise. A second peer, built
        # and trained under it, gives the most bytes it held at once (the data were allocated before: not
        # counted).
        tracemalloc.start()
        peer = PEERS[spec["peer"]](prob)
        used = _sample_epochs(peer, epochs, lambda: tracemalloc.get_traced_memory()[0])
        out["traced"] = _growth(used, epochs)
        out["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out


def _sample_epochs(peer, epochs: int, read) -> dict:
    """``read()`` after every epoch (or after epochs 2, the middle one and the last, for peers without a
    hook)."""
    used = np.zeros(epochs + 1)  # preallocated: sampling must not allocate what it measures
    if peer.per_epoch_hook:
        peer.run(epochs, lambda epoch: used.__setitem__(epoch + 1, read()))
    else:
        half = max(3, epochs // 2)
        for start, stop in ((0, 2), (2, half), (half, epochs)):
            peer.run(stop - start)
            used[stop] = read()
    return used


def _growth(used: dict, epochs: int) -> dict:
    """Bytes per epoch from epoch 2 to the last, and over the second half alone (a leak grows in both; the
    allocator settling shows in the first only)."""
    half = max(3, epochs // 2)
    return {"per_epoch": (used[epochs] - used[2]) / (epochs - 2),
            "per_epoch_2nd_half": (used[epochs] - used[half]) / max(1, epochs - half)}


def memory_case(peer_names, sizes, m, dtype, lr, epochs, args) -> dict:
    if args.backend != "numpy" and str(args.device).startswith("cuda"):
        return {name: device_memory(name, make_problem(sizes, m, dtype, None, args.backend, args.device, lr),
                                    epochs)
                for name in peer_names}
    out = {}
    for name in peer_names:
        spec = {"peer": name, "sizes": list(sizes), "m": m, "dtype": dtype, "batch_size": None, "lr": lr,
                "backend": args.backend, "device": args.device, "epochs": epochs, "threads": args.threads,
                "nn_xp": args.nn_xp}
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-child",
                               json.dumps(spec)],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode:
            out[name] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        else:
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def device_memory(name: str, prob: Problem, epochs: int) -> dict:
    """On a GPU, in this process: CuPy's pool high-water (it keeps freed blocks) or torch's peak allocated."""
    try:
        if name == "nn_xp" and prob.backend == "cupy":
            import cupy

            pool = cupy.get_default_memory_pool()
            cupy.cuda.Device().synchronize()
            pool.free_all_blocks()  # what is left is live arrays of earlier peers
            base, current, peak = pool.total_bytes(), pool.used_bytes, pool.total_bytes
        else:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base, current, peak = (torch.cuda.memory_allocated(), torch.cuda.memory_allocated,
                                   torch.cuda.max_memory_allocated)
        peer = PEERS[name](prob)

        def read():
            peer.sync()
            return current()

        used = _sample_epochs(peer, epochs, read)
        return {"peak_extra": peak() - base, "device_growth": _growth(used, epochs), "epochs": epochs,
                "device": True}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


# ------------------------------------------------------------------ GPU extras
def gpu_extras(args) -> dict:
    """On CUDA: kernel launches per epoch (1-20-1, via torch.profiler's CUPTI trace) and CUDA-graph
    replays."""
    prob = make_problem((1, 20, 1), 100, "float32", None, args.backend, args.device)
    res = {"launches": {}, "graphs": {}}
    for name in ACCEL_PEERS:
        try:
            res["launches"][name] = _launches(PEERS[name](prob), epochs=50)
        except Exception as exc:
            res["launches"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    for name, fn in (("nn_xp", _graph_nnxp), ("torch", _graph_torch)):
        try:
            res["graphs"][name] = fn(prob, epochs=200)
        except Exception as exc:
            res["graphs"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    return res


def _launches(peer, epochs: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    peer.run(5)
    peer.sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        peer.run(epochs)
        peer.sync()
    kernels = copies = 0
    for evt in prof.events():
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if evt.name.startswith(("Memcpy", "Memset")):
            copies += 1
        else:
            kernels += 1
    if not kernels:  # never report 0 launches for a trace that simply did not see them
        raise RuntimeError("torch.profiler's CUPTI trace recorded no kernel")
    return {"kernels_per_epoch": kernels / epochs, "copies_per_epoch": copies / epochs}


def _graph_nnxp(prob: Problem, epochs: int) -> dict:
    """nn_xp's own ``engine="cuda_graph"`` (one captured full-batch epoch, replayed) against the same network
    on the buffered engine, from the same weights: seconds per epoch and the weights' difference."""
    from peers import NnXp

    import nn_xp

    graphed, eager = NnXp(prob), NnXp(prob)
    net = graphed.net
    graphed.net = nn_xp.Network(net.layer_sizes, net.activations, loss="mse", backend=prob.backend,
                                device=prob.device, dtype=prob.dtype, engine="cuda_graph")
    graphed.reset()
    graphed.run(3)  # the first epoch eager, then the capture
    graphed.sync()
    t0 = time.perf_counter()
    graphed.run(epochs)
    graphed.sync()
    per_epoch = (time.perf_counter() - t0) / epochs
    eager.run(3 + epochs)
    return {"graph_s_per_epoch": per_epoch, "max_rel_diff_vs_eager": _weight_diff(graphed, eager)}


def _graph_torch(prob: Problem, epochs: int) -> dict:
    import torch
    from peers import TorchManual

    graphed, eager = TorchManual(prob), TorchManual(prob)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad():
        with torch.cuda.stream(side):
            for _ in range(3):
                graphed._step(graphed.X, graphed.Y)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss = graphed._step(graphed.X, graphed.Y)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(epochs):
            graph.replay()
            loss.item()
        per_epoch = (time.perf_counter() - t0) / epochs
        for _ in range(3 + epochs):  # capturing records the epoch without running it
            eager._step(eager.X, eager.Y)
    return {"graph_s_per_epoch": per_epoch, "max_rel_diff_vs_eager": _weight_diff(graphed, eager)}


def _weight_diff(a, b) -> float:
    return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y)))
               for pa, pb in zip(a.weights(), b.weights()) for x, y in zip(pa, pb))


# ------------------------------------------------------------------ profile
def profile(args, peer_names) -> str:
    """cProfile of nn_xp's fit, and page faults per epoch (fresh memory), on the two focus sizes."""
    lines = []
    for (sizes, m, lr), dtype, k in ((SIZES[0], "float64", 2000), (SIZES[4], "float32", 4)):
        prob = make_problem(sizes, m, dtype, None, args.backend, args.device, lr)
        peers = [PEERS[n](prob) for n in peer_names if n in ("nn_xp", "tuned")]
        lines.append(f"## {size_name(sizes, m)}, {dtype}, {k} epochs")
        for p in peers:
            p.run(2)
            p.reset()
            f0, t0 = _faults(), time.perf_counter()
            p.run(k)
            t = time.perf_counter() - t0
            faults = (_faults() - f0) / k
            lines.append(f"{p.name}: {t / k * 1e3:.3f} ms/epoch, {faults:.0f} minor page faults per epoch")
        nn = next(p for p in peers if p.name == "nn_xp")
        nn.reset()
        prof = cProfile.Profile()
        prof.enable()
        nn.run(k)
        prof.disable()
        s = io.StringIO()
        st = pstats.Stats(prof, stream=s)
        lines.append(f"nn_xp: {st.total_calls / k:.0f} Python-visible calls per epoch")
        st.sort_stats("tottime").print_stats(25)
        lines.append(s.getvalue())
    return "\n".join(lines)


# ------------------------------------------------------------------ report
def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def fmt_mb(b) -> str:
    return "–" if b is None else f"{b / 1e6:.1f}"


def _peak_total(r, bound):
    if r is None or "error" in r:
        return None
    return r["peak_extra"] + (0 if r.get("device") else bound["data"])


def _peak_cell(r, bound) -> str:
    total = _peak_total(r, bound)
    if total is None:
        return "error" if r else "–"
    if bound["total"] < 1e6:  # page and allocator granularity: a ratio would mean nothing
        return fmt_mb(total)
    return f"{fmt_mb(total)} ({total / bound['total']:.2f}×)"


def _excess(c: dict, total: float) -> str:
    extra = total - c["bound"]["total"]
    widest = max(c["sizes"][1:])
    return (f"{extra / 1e6:+.1f} MB ≈ {extra / (c['m'] * widest * np.dtype(c['dtype']).itemsize):+.1f} "
            f"× (m × {widest})")


def _growth_cell(r) -> str:
    if r is None or "error" in r:
        return "–"
    if "device_growth" in r:
        return f"{r['device_growth']['per_epoch_2nd_half']:+.0f} B"
    traced = f"{r['traced']['per_epoch_2nd_half']:+.0f} B" if "traced" in r else "–"
    return f"{traced} / {r['rss']['per_epoch_2nd_half'] / 1e3:+.0f} kB"


def _leak(r):
    """nn_xp's growth per epoch over the second half, by the most exact measure at hand."""
    if "device_growth" in r:
        return r["device_growth"]["per_epoch_2nd_half"], "device bytes"
    if "traced" in r:
        return r["traced"]["per_epoch_2nd_half"], "traced bytes"
    return r["rss"]["per_epoch_2nd_half"], "RSS bytes"


def report(res: dict) -> str:
    info, peers, labels = res["machine"], res["peers"], res["labels"]
    out = ["# Benchmarks", ""]
    if res["quick"]:
        out += ["**Quick run (`--quick`): few rounds, not representative.**", ""]
    out += [f"Generated by `benchmarks/bench.py` on {res['date']} in {res['elapsed'] / 60:.1f} min.", "",
            "```", res["command"], "```", "",
            "## Machine and versions", "",
            f"- CPU: {info['cpu']}, {info['cores']} cores, {info['memory']} memory; {info['platform']}",
            f"- Threads: BLAS and torch use {info['threads']} (`torch.set_num_threads({info['threads']})`)",
            "- " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
            "- Environment: " + ", ".join(f"`{k}` {v}" for k, v in info["env"].items())]
    (l0, _, _), (l1, _, l15) = res["load"][0], res["load"][-1]
    out.append(f"- Load average (1 min) at the start {l0:.2f}, at the end {l1:.2f} (15 min: {l15:.2f}); "
               f"above 1 on 2 cores, other work shared the machine and the spreads below show how much")
    for p in info["pools"]:
        out.append(f"- Thread pool: {p['internal_api']} {p['version'] or ''} ({p['prefix']}), "
                   f"kernel `{p['architecture'] or '-'}`, {p['num_threads']} threads")
    out += ["", "## What is timed", "",
            "Every peer trains the same network from the same starting weights (one `numpy.random.Generator("
            f"{SEED})`): sigmoid hidden layers, identity output, the blog's loss `0.5‖A−Y‖²/m` computed "
            "and read back every epoch, back-propagation, then plain gradient descent with a fixed learning "
            "rate on the full batch ("
            + ", ".join(dict.fromkeys(f"{size_name(s)}: {lr}" for s, _, lr in SIZES))
            + f"; stable on each), or Adam (lr {LR_ADAM}) on shuffled mini-batches of {BATCH}. "
            "Times are medians over interleaved rounds of the seconds per epoch in the steady state: each "
            "run resets the peer to the starting weights and trains one untimed epoch, then `k` timed epochs "
            "(the same `k` for every peer of a case); the peers' order rotates every round, with a pause "
            "before each run. GFLOP/s counts the matrix products only: "
            "`2·m·Σ n_in·n_out` forward, as much for `dW`, and `dA` for every layer but the first.", ""]
    for name in peers:
        out.append(f"- **{name}**: {labels[name]}")
    if res["missing"]:
        out.append("- not run: " + ", ".join(f"{k} ({v})" for k, v in res["missing"].items()))
    out += ["", "## Same weights first", "",
            f"Each peer's weights after a few float64 epochs against the plain-NumPy reference (max |ΔW| / "
            f"max |W| per array; must be ≤ {TOLERANCE:g}).", "",
            "| case | peer | epochs | rel. error | |", "|---|---|---|---|---|"]
    for r in res["agreement"]:
        err = "–" if r["error"] is None else f"{r['error']:.1e}"
        out.append(f"| {r['case']} | {r['peer']} | {r['epochs']} | {err} | {r['note']} |")
    out += ["", "## Matrix-product peak", "",
            f"Median GFLOP/s of square products ({', '.join(map(str, PEAK_SIZES))}), best size, at the start "
            "and the end of the run. Each case below also times the products of "
            f"{' and '.join(map(str, ROUND_PEAK_SIZES))} once per round, among its peers, and its percent of "
            "peak is against the median of those (its own column in the GFLOP/s tables): this machine's "
            "speed drifts by a fifth over minutes.", "",
            "| dtype | start | end |", "|---|---|---|"]
    for dt, (a, b) in res["peak_runs"].items():
        out.append(f"| {dt} | {a:.0f} | {b:.0f} |")
    for title, key in (("Full batch, gradient descent", "full"), (f"Mini-batch {BATCH}, Adam", "mini")):
        cases = res[key]
        if not cases:
            continue
        out += ["", f"## {title}", "", "Median time per epoch (k epochs per run × rounds; spread = the "
                "largest interquartile range over the peers, relative to its median).", "",
                "| size | dtype | " + " | ".join(peers) + " | k × rounds | spread |",
                "|---|---|" + "---|" * len(peers) + "---|---|"]
        for c in cases:
            pk = c["timing"]["peers"]
            spread = max((v["q3"] - v["q1"]) / v["median"] for v in pk.values())  # as _spread
            out.append(f"| {size_name(c['sizes'], c['m'])} | {c['dtype']} | "
                       + " | ".join(fmt_time(pk[n]["median"]) if n in pk else "–" for n in peers)
                       + f" | {c['timing']['k']} × {c['timing']['rounds']} | {spread:.0%} |")
        out += ["", "GFLOP/s and percent of the matrix-product peak measured in the same rounds.", "",
                "| size | dtype | peak | " + " | ".join(peers) + " |", "|---|---|---|" + "---|" * len(peers)]
        for c in cases:
            pk, peak = c["timing"]["peers"], case_peak(c, res)
            cells = [f"{peak:.0f}"]
            for n in peers:
                if n not in pk:
                    cells.append("–")
                    continue
                g = c["flops"] / pk[n]["median"] / 1e9
                cells.append(f"{g:.1f} ({g / peak:.0%})")
            out.append(f"| {size_name(c['sizes'], c['m'])} | {c['dtype']} | " + " | ".join(cells) + " |")
        others = [n for n in peers if n != "nn_xp"]
        out += ["", "nn_xp's time divided by each peer's (below 1: nn_xp is faster): the median of the "
                "ratios paired round by round, and in brackets their interquartile range, so a loaded run "
                "shows.", "",
                "| size | dtype | " + " | ".join(f"÷ {n}" for n in others) + " |",
                "|---|---|" + "---|" * len(others)]
        for c in cases:
            pk = c["timing"]["peers"]
            out.append(f"| {size_name(c['sizes'], c['m'])} | {c['dtype']} | "
                       + " | ".join(_ratio_cell(pk["nn_xp"], pk[n]) if n in pk else "–" for n in others)
                       + " |")
        out += ["", "Minor page faults per epoch: memory the peer touched fresh (a 4 KiB page or a 2 MiB "
                "huge page each), the sign of temporaries too large for the allocator to recycle (above "
                "glibc's 32 MiB mmap threshold every array is mapped anew and handed back).", "",
                "| size | dtype | " + " | ".join(peers) + " |", "|---|---|" + "---|" * len(peers)]
        for c in cases:
            pk = c["timing"]["peers"]
            out.append(f"| {size_name(c['sizes'], c['m'])} | {c['dtype']} | "
                       + " | ".join(f"{pk[n]['faults']:.0f}" if n in pk else "–" for n in peers) + " |")
    if res["memory"]:
        on_device = any(r.get("device") for c in res["memory"] for r in c["peers"].values())
        where = ("device memory in this process (CuPy: the pool's high-water, it keeps freed blocks; torch: "
                 "peak allocated), data included" if on_device else
                 "each peer in a fresh process: the data + the rise of the peak RSS (VmHWM, reset just "
                 "before the peer is built, after a warm-up that loads what it loads lazily) over the RSS "
                 "before it")
        out += ["", "## Memory", "",
                f"Full batch. Peak = {where}. The bound is data + parameters + gradients + one Z and one A "
                "per layer. MB = 10⁶ bytes.", "",
                "| size | dtype | bound | " + " | ".join(peers) + " | nn_xp excess over the bound |",
                "|---|---|---|" + "---|" * len(peers) + "---|"]
        for c in res["memory"]:
            bnd, mem = c["bound"], c["peers"]
            cells = [_peak_cell(mem.get(n), bnd) for n in peers]
            excess = "–"
            total = _peak_total(mem.get("nn_xp"), bnd)
            if total is not None and bnd["total"] >= 1e6:
                excess = _excess(c, total)
            out.append(f"| {size_name(c['sizes'], c['m'])} | {c['dtype']} | {fmt_mb(bnd['total'])} | "
                       + " | ".join(cells) + f" | {excess} |")
        if any("traced_peak" in r for c in res["memory"] for r in c["peers"].values()):
            out += ["", "The same peak counted exactly: data + the most bytes of NumPy buffers the peer held "
                    "at once (tracemalloc; no BLAS workspace, no allocator slack; not for torch).", "",
                    "| size | dtype | bound | " + " | ".join(peers) + " | nn_xp excess over the bound |",
                    "|---|---|---|" + "---|" * len(peers) + "---|"]
            for c in res["memory"]:
                bnd, mem = c["bound"], c["peers"]
                cells = [_peak_cell({"peak_extra": mem[n]["traced_peak"]}, bnd)
                         if "traced_peak" in mem.get(n, {}) else "–" for n in peers]
                excess = "–"
                if "traced_peak" in mem.get("nn_xp", {}) and bnd["total"] >= 1e6:
                    excess = _excess(c, bnd["data"] + mem["nn_xp"]["traced_peak"])
                out.append(f"| {size_name(c['sizes'], c['m'])} | {c['dtype']} | {fmt_mb(bnd['total'])} | "
                           + " | ".join(cells) + f" | {excess} |")
        out += ["", "Growth per epoch over the second half of the epochs: bytes traced by tracemalloc (NumPy "
                "reports its buffers there: exact, no allocator noise; not for torch) / RSS in kB (moves in "
                "pages and with the allocator's heap, so a few arrays either way is noise)"
                + ("; on a GPU, the device bytes in use" if on_device else "") + ".", "",
                "| size | dtype | epochs | " + " | ".join(peers) + " |",
                "|---|---|---|" + "---|" * len(peers)]
        for c in res["memory"]:
            mem = c["peers"]
            epochs = next((r["epochs"] for r in mem.values() if "epochs" in r), "–")
            out.append(f"| {size_name(c['sizes'], c['m'])} | {c['dtype']} | {epochs} | "
                       + " | ".join(_growth_cell(mem.get(n)) for n in peers) + " |")
        errs = [f"{n} on {size_name(c['sizes'], c['m'])} {c['dtype']}: {r['error']}"
                for c in res["memory"] for n, r in c["peers"].items() if "error" in r]
        if errs:
            out += [""] + [f"- memory probe failed: {e}" for e in errs]
    if res.get("gpu"):
        g = res["gpu"]
        out += ["", "## GPU: launches and CUDA graphs (1-20-1, m=100, float32)", "",
                "| peer | kernels / epoch | copies / epoch | graph s / epoch | graph vs eager rel. diff |",
                "|---|---|---|---|---|"]
        for n in ACCEL_PEERS:
            la, gr = g["launches"].get(n, {}), g["graphs"].get(n, {})
            kcell = la.get("error") or f"{la.get('kernels_per_epoch', float('nan')):.1f}"
            ccell = "" if "error" in la else f"{la.get('copies_per_epoch', float('nan')):.1f}"
            gcell = gr.get("error") or fmt_time(gr["graph_s_per_epoch"])
            dcell = "" if "error" in gr else f"{gr['max_rel_diff_vs_eager']:.1e}"
            out.append(f"| {n} | {kcell} | {ccell} | {gcell} | {dcell} |")
    out += previous_report(res)
    out += extras_report(res)
    out += ["", "## Targets", ""] + [f"- **{status}**: {text}" for status, text in targets(res)]
    return "\n".join(out) + "\n"


def _paired(a: list, b: list) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def previous_report(res: dict) -> list[str]:
    """nn_xp ÷ tuned per case, this run beside the previous one (each paired within its own run)."""
    prev = res.get("previous")
    if not prev:
        return []
    out = ["", "## Beside the previous run", "",
           "nn_xp ÷ tuned NumPy (paired medians, interquartile range), this run and the run of "
           f"{prev['date']} ({prev['commit']}); each ratio is measured within its own run, so the two "
           "columns compare without comparing the machine's load.", "",
           "| case | size | dtype | previous | now |", "|---|---|---|---|---|"]
    for key, title in (("full", "full batch"), ("mini", f"mini-batch {BATCH}")):
        before = {(tuple(c["sizes"]), c["m"], c["dtype"]): c for c in prev.get(key, [])}
        for c in res[key]:
            old = before.get((tuple(c["sizes"]), c["m"], c["dtype"]))
            pk, cell = c["timing"]["peers"], "–"
            if old is not None and "tuned" in old["timing"]["peers"]:
                cell = _ratio_cell(old["timing"]["peers"]["nn_xp"], old["timing"]["peers"]["tuned"])
            now = _ratio_cell(pk["nn_xp"], pk["tuned"]) if "tuned" in pk else "–"
            out.append(f"| {title} | {size_name(c['sizes'], c['m'])} | {c['dtype']} | {cell} | {now} |")
    return out


def extras_report(res: dict) -> list[str]:
    """The predict and torch-backend sections."""
    out = []
    if res.get("predict"):
        names = list(res["predict"][0]["peers"])
        out += ["", "## Predict", "",
                "`net.predict(X)` on host float32 rows against tuned NumPy (two `(m, widest)` buffers per "
                "call, `out=` everywhere) and PyTorch (`addmm`, `sigmoid`, `no_grad`), same weights. Warm: "
                "calls back to back; cold: a pause before each call, so memory the last call freed has gone "
                "back to the system. Peak: the most bytes of NumPy buffers held at once during a call "
                "(tracemalloc), against output + two layer-widths of rows. Ratios are paired per round.", "",
                "| size | " + " | ".join(f"{n} warm" for n in names) + " | nn_xp ÷ tuned warm | "
                + " | ".join(f"{n} cold" for n in names) + " | nn_xp ÷ tuned cold | peak nn_xp | peak tuned "
                "| output + 2 widths |", "|---|" + "---|" * (2 * len(names) + 5)]
        for c in res["predict"]:
            pk, bnd = c["peers"], c["bound"]
            warm = " | ".join(fmt_time(pk[n]["warm"]) for n in names)
            cold = " | ".join(fmt_time(pk[n]["cold"]) if "cold" in pk[n] else "–" for n in names)
            rw = _paired(pk["nn_xp"]["warm_samples"], pk["tuned"]["warm_samples"])
            rc = (f"{_paired(pk['nn_xp']['cold_samples'], pk['tuned']['cold_samples']):.2f}"
                  if "cold" in pk["nn_xp"] else "–")
            out.append(f"| {size_name(c['sizes'], c['m'])} | {warm} | {rw:.2f} | {cold} | {rc} | "
                       f"{fmt_mb(pk['nn_xp']['traced_peak'])} | {fmt_mb(pk['tuned']['traced_peak'])} | "
                       f"{fmt_mb(bnd['output'] + bnd['two_widths'])} |")
    if res.get("torch_backend"):
        out += ["", "## nn_xp on torch", "",
                "nn_xp with `backend=\"torch\"` (CPU tensors) against PyTorch written by hand the idiomatic "
                "way (`addmm`, `torch.sigmoid`, `sum`, `add_`; the peer `torch` above), full batch, float32; "
                "the median of the ratios paired round by round, and their interquartile range.", "",
                "| size | nn_xp on torch | torch | ÷ torch |", "|---|---|---|---|"]
        for c in res["torch_backend"]:
            pk = c["timing"]["peers"]
            out.append(f"| {size_name(c['sizes'], c['m'])} | {fmt_time(pk['nn_xp']['median'])} | "
                       f"{fmt_time(pk['torch']['median'])} | {_ratio_cell(pk['nn_xp'], pk['torch'])} |")
    return out


def extras_targets(res: dict) -> list[tuple[str, str]]:
    rows = []
    verdict = {True: "met", False: "NOT met"}
    for c in res.get("predict", []):
        pk, bnd, name = c["peers"], c["bound"], size_name(c["sizes"], c["m"])
        rw = _paired(pk["nn_xp"]["warm_samples"], pk["tuned"]["warm_samples"])
        if c["m"] < 10000:
            rows.append((verdict[rw <= 1.2], f"tiny predict ≤ 1.2 × tuned NumPy ({name}): {rw:.2f}"))
            continue
        rc = _paired(pk["nn_xp"]["cold_samples"], pk["tuned"]["cold_samples"])
        peak = pk["nn_xp"]["traced_peak"]
        rows.append((verdict[rw <= 1.0 and rc <= 1.0 and peak <= bnd["output"] + bnd["two_widths"]],
                     f"predict ≤ 1.0 × tuned NumPy warm and cold, peak ≤ output + two layer-widths of rows "
                     f"({name}): warm {rw:.2f}, cold {rc:.2f}, peak {fmt_mb(peak)} against "
                     f"{fmt_mb(bnd['output'] + bnd['two_widths'])}"))
    cases = res.get("torch_backend", [])
    if cases:
        items = [(c, statistics.median(paired_ratios(*(c["timing"]["peers"][n] for n in ("nn_xp", "torch")))))
                 for c in cases]
        rows.append((verdict[all(r <= 1.10 for _, r in items)],
                     "nn_xp on torch ≤ 1.10 × idiomatic hand-written torch on every size: "
                     + "; ".join(f"{size_name(c['sizes'], c['m'])}: {r:.2f}" for c, r in items)))
    return rows


def targets(res: dict) -> list[tuple[str, str]]:
    """(status, text) per target of the issue, from this run's ratios."""
    rows = []
    full, peers = res["full"], res["peers"]

    def ratio(c, other):  # as the ratio table: the median of the ratios paired round by round
        pk = c["timing"]["peers"]
        if other not in pk:
            return None
        paired = paired_ratios(pk["nn_xp"], pk[other])
        return statistics.median(paired) if paired else pk["nn_xp"]["median"] / pk[other]["median"]

    def cases_text(items):
        return "; ".join(f"{size_name(c['sizes'], c['m'])} {c['dtype']}: {r:.2f}" for c, r in items)

    def verdict(ok):
        return "met" if ok else "NOT met"

    if "tuned" in peers and full:
        items = [(c, ratio(c, "tuned")) for c in full]
        rows.append((verdict(all(r <= 1.05 for _, r in items)),
                     "nn_xp per epoch ≤ 1.05 × tuned NumPy on every size and dtype (nn_xp ÷ tuned): "
                     + cases_text(items)))
    tiny = [c for c in full if tuple(c["sizes"]) == (1, 20, 1)]
    if "plain" in peers and tiny:
        items = [(c, ratio(c, "plain")) for c in tiny]
        rows.append((verdict(all(r <= 1.0 for _, r in items)),
                     "the tiny network no slower than the blog's plain NumPy (nn_xp ÷ plain ≤ 1): "
                     + cases_text(items)))
    big = [c for c in full if tuple(c["sizes"]) == (784, 1024, 1024, 10) and c["dtype"] == "float32"]
    if big and res["peak_runs"].get("float32"):
        c = big[0]
        peak = case_peak(c, res)
        pct = c["flops"] / c["timing"]["peers"]["nn_xp"]["median"] / 1e9 / peak
        rows.append((verdict(pct >= 0.8), "≥ 80% of the measured matmul peak on 784-1024-1024-10 float32: "
                     f"{pct:.0%} of {peak:.0f} GFLOP/s (the peak measured in the same rounds)"))
    for other in ("torch", "sklearn"):
        if other in peers and full:
            items = [(c, ratio(c, other)) for c in full]
            rows.append((verdict(all(r < 1.0 for _, r in items)),
                         f"faster than {other} on every size (nn_xp ÷ {other} < 1): " + cases_text(items)))
    mem = [(c, c["peers"].get("nn_xp")) for c in res["memory"]]
    mem = [(c, r) for c, r in mem if r and "error" not in r]
    if mem:
        leaks = [(c, *_leak(r)) for c, r in mem]
        rows.append((verdict(all(g <= 1024 for _, g, _ in leaks)),
                     "no memory growth across epochs (nn_xp, per epoch over the second half; ≤ 1 kB counts "
                     "as none: the history's lists of losses and epoch numbers grow by design, 70–150 B an "
                     "epoch): "
                     + "; ".join(f"{size_name(c['sizes'], c['m'])} {c['dtype']}: {g:+.0f} {what}"
                                 for c, g, what in leaks)))
        over = "; ".join(f"{size_name(c['sizes'], c['m'])} {c['dtype']}: "
                         f"{_peak_total(r, c['bound']) / 1e6:.1f} MB = "
                         f"{_peak_total(r, c['bound']) / c['bound']['total']:.2f} × bound"
                         # below 1 MB, pages and the allocator rule
                         for c, r in mem if c["bound"]["total"] >= 1e6)
        rows.append(("reported", "nn_xp's peak memory per size against data + params + grads + one Z and A "
                                 "per layer: " + over + " (reasons: benchmarks/README.md)"))
    return rows + extras_targets(res)


# ------------------------------------------------------------------ main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a ~1 minute sanity run; prints the report only")
    ap.add_argument("--out", help="markdown report (default docs/benchmarks.md, on a GPU "
                                  "docs/benchmarks-gpu.md; with --quick: none)")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--gpu", action="store_true",
                    help="nn_xp on CuPy vs PyTorch CUDA: --backend cupy --device cuda")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "torch"], help="nn_xp's backend")
    ap.add_argument("--device", default=None, help="nn_xp's and torch's device, e.g. cuda or cuda:1")
    ap.add_argument("--dtypes", default=None, help="comma-separated (default float32,float64; GPU: float32)")
    ap.add_argument("--sizes", default=None, help="comma-separated indices into SIZES (default all)")
    ap.add_argument("--peers", default=None, help="comma-separated subset of the peers")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds per case (default 7; quick 3)")
    ap.add_argument("--round-seconds", type=float, default=None, help="target seconds per run (default 0.25)")
    ap.add_argument("--settle", type=float, default=None,
                    help="pause between runs so the last library's spinning threads go idle (default 0.2 s)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS and torch threads (default: the BLAS default)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-minibatch", action="store_true")
    ap.add_argument("--no-predict", action="store_true", help="skip the predict table (CPU runs)")
    ap.add_argument("--no-torch-backend", action="store_true",
                    help="skip the table of nn_xp on torch against hand-written torch (CPU runs)")
    ap.add_argument("--only-extras", action="store_true",
                    help="only the predict and torch-backend tables (with --json, for a quick look)")
    ap.add_argument("--profile", action="store_true",
                    help="profile nn_xp's fit on the two focus sizes and exit")
    ap.add_argument("--nn-xp", default=str(ROOT), metavar="DIR",
                    help="the folder holding the nn_xp package to time (default: this checkout's)")
    ap.add_argument("--nn-xp-label", default=None, metavar="TEXT",
                    help="how the report names that nn_xp, e.g. 'git archive of commit abc1234'")
    ap.add_argument("--previous", metavar="JSON",
                    help="a --json file of an earlier run: the report sets its ratios beside this run's")
    ap.add_argument("--render", metavar="JSON",
                    help="only rewrite the report from a --json file of an earlier run")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.previous and not Path(args.previous).is_file():  # now, not after the run
        ap.error(f"--previous: no such file: {args.previous}")
    if args.gpu:
        args.backend, args.device = "cupy", args.device or "cuda"
    if args.backend == "cupy" and args.device is None:
        args.device = "cuda"
    accel = args.backend != "numpy"
    args.dtypes = (args.dtypes or ("float32" if accel else "float32,float64")).split(",")
    # --gpu must fit `ci/gpu.sh --bench` (240 s with install and preflight), CuPy's compilations included
    args.rounds = args.rounds or (3 if args.quick else 5 if accel else 7)
    args.round_seconds = args.round_seconds or (0.05 if args.quick or accel else 0.25)
    # OpenBLAS's idle workers spin for ~0.1 s after a call, and slow whatever runs next on 2 cores
    args.settle = args.settle if args.settle is not None else (0.02 if accel else 0.05 if args.quick else 0.2)
    if args.out is None and not args.quick and not args.profile and not args.memory_child:
        # a GPU run has its own report: it must never overwrite the CPU one
        args.out = str(ROOT / "docs" / ("benchmarks-gpu.md" if accel else "benchmarks.md"))
    return args


def extras(args, sizes, peer_names) -> tuple[list, list]:
    """The predict table's cases and the torch backend's (issue 20)."""
    predict, torch_cases = [], []
    if not args.no_predict:
        cases = inference.PREDICT_CASES[:2] if args.quick else inference.PREDICT_CASES
        for s, m in cases:
            log(f"predict {size_name(s, m)} float32")
            predict.append(inference.predict_case(s, m, "float32", args.rounds, 1.0 if args.quick else 3.0,
                                                  "torch" in peer_names))
            log("  " + ", ".join(f"{n} {fmt_time(v['warm'])}" for n, v in predict[-1]["peers"].items()))
    if not args.no_torch_backend and "torch" in peer_names:
        for s, m, lr in sizes:
            log(f"nn_xp on torch {size_name(s, m)} float32")
            torch_cases.append(inference.torch_backend_case(make_problem, peers_module, time_case, s, m, lr,
                                                            args.rounds, args.round_seconds, args.settle))
            pk = torch_cases[-1]["timing"]["peers"]
            log("  " + ", ".join(f"{n} {fmt_time(v['median'])}" for n, v in pk.items()))
    return predict, torch_cases


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        spec = json.loads(args.memory_child)
        sys.path.insert(0, spec["nn_xp"])
        print(json.dumps(memory_child(spec)))
        return
    sys.path.insert(0, str(Path(args.nn_xp).resolve()))  # before anything imports nn_xp
    if args.render:
        Path(args.out).write_text(report(json.loads(Path(args.render).read_text())))
        log(f"wrote {args.out} from {args.render}")
        return
    started = time.time()
    threads, pools = threads_and_blas(args.threads)
    args.threads = threads
    set_torch_threads(threads)
    accel = args.backend != "numpy"
    wanted = args.peers.split(",") if args.peers else (ACCEL_PEERS if accel else CPU_PEERS)
    peer_names, missing = available_peers(wanted)
    if "nn_xp" not in peer_names:
        sys.exit("nn_xp must be among the peers")
    if args.profile:
        print(profile(args, peer_names))
        return
    if args.sizes is not None:
        sizes = [SIZES[int(i)] for i in args.sizes.split(",")]
    else:
        sizes = [SIZES[i] for i in QUICK_SIZES] if args.quick and not accel else SIZES
    res = {"quick": args.quick, "peers": peer_names, "missing": missing,
           "labels": {n: PEERS[n].label for n in peer_names},
           "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
           "command": "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
           "machine": machine_info(threads, pools, args.nn_xp_label), "full": [], "mini": [], "memory": [],
           "load": [os.getloadavg()]}
    if args.previous:
        prev = json.loads(Path(args.previous).read_text())
        version = prev["machine"].get("versions", {}).get("nn_xp", "")
        res["previous"] = {"date": prev["date"], "commit": version, "full": prev.get("full", []),
                           "mini": prev.get("mini", [])}
    if accel:
        res["labels"]["nn_xp"] = f"nn_xp, backend={args.backend!r}, device={args.device!r}"
        res["labels"]["torch"] += f" on {args.device or 'cpu'}"
    log(f"peers {peer_names}; agreement check")
    res["agreement"] = agreement(peer_names, args.backend, args.device)
    for r in res["agreement"]:
        if r["note"] == "MISMATCH":
            log(f"WARNING: {r['peer']} disagrees on {r['case']}: {r['error']:.1e}")
        elif r["note"].startswith("MUTATED"):
            log(f"WARNING: {r['peer']} trained the shared starting weights in place on {r['case']}")
    peak_kind = "numpy" if not accel else args.backend
    log("matmul peak")
    peaks = {dt: matmul_peak(peak_kind, dt, args.device) for dt in args.dtypes}

    est_epoch = {}
    for s, m, lr in ([] if args.only_extras else sizes):
        for dt in args.dtypes:
            for mini in ([False] if args.no_minibatch or dt != args.dtypes[0] else [False, True]):
                prob = make_problem(s, m, dt, BATCH if mini else None, args.backend, args.device, lr)
                log(f"{'mini-batch' if mini else 'full batch'} {size_name(s, m)} {dt}")
                peers = [PEERS[n](prob) for n in peer_names]
                timing = time_case(peers, args.rounds, args.round_seconds, args.settle,
                                   lambda dt=dt: matmul_peak(peak_kind, dt, args.device, reps=3,
                                                             sizes=ROUND_PEAK_SIZES))
                del peers
                gc.collect()
                case = {"sizes": list(s), "m": m, "dtype": dt, "flops": flops_per_epoch(s, m),
                        "timing": timing}
                res["mini" if mini else "full"].append(case)
                if not mini:
                    est_epoch[(s, m, dt, lr)] = max(v["median"] for v in timing["peers"].values())
                log("  " + ", ".join(f"{n} {fmt_time(v['median'])}" for n, v in timing["peers"].items()))
    log("matmul peak again")
    res["peak_runs"] = {dt: (peaks[dt], matmul_peak(peak_kind, dt, args.device)) for dt in args.dtypes}
    if not args.no_memory:
        for (s, m, dt, lr), t in est_epoch.items():
            epochs = int(min(100, max(5, (0.5 if args.quick else 1.0) / t)))
            log(f"memory {size_name(s, m)} {dt}, {epochs} epochs per peer")
            res["memory"].append({"sizes": list(s), "m": m, "dtype": dt, "bound": bound_bytes(s, m, dt),
                                  "peers": memory_case(peer_names, s, m, dt, lr, epochs, args)})
    if accel and str(args.device).startswith("cuda"):
        log("GPU launches and CUDA graphs")
        res["gpu"] = gpu_extras(args)
    if not accel:
        res["predict"], res["torch_backend"] = extras(args, sizes, peer_names)
    res["elapsed"] = time.time() - started
    res["load"].append(os.getloadavg())
    if args.json:  # first: a report that fails must not take the measurements with it
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    text = report(res)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        log(f"wrote {args.out}")
    else:
        print(text)
    log(f"done in {res['elapsed'] / 60:.1f} min")


if __name__ == "__main__":
    main()
