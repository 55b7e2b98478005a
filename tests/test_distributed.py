"""Data-parallel ``fit(comm=...)`` (issue 13): shards, the communicator protocol, and real jobs.

In-process: the shards of a batch, the losses' denominator, :class:`LocalCommunicator` (threads) and the
training it gives on every backend, start-up agreement and faults, the launcher's environment, the NCCL
calls against stand-ins. Then real jobs of ``mpiexec -n 2`` and ``-n 3`` (oversubscribed) and of
torch.distributed over gloo, each rank running ``tests/mpi_worker.py``: one process's training to
rel < 1e-12 in float64, every rank bit-identical, checkpoints by rank 0 alone and resumed from its file,
a mismatch reported on every rank, a failing or stuck rank ending the job in seconds. The jobs are
skipped where mpi4py and mpiexec (or torch) are missing; CI installs them (``.ci/run``).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import array_api_compat.numpy as xp
import numpy as np
import pytest
from helpers import in_threads

import nn_xp
from nn_xp import backends
from nn_xp.distributed import Communicator, CommunicatorAborted, LocalCommunicator, RankFailedError
from nn_xp.losses import LOSSES

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "mpi_worker.py"
REL = 1e-12


# ------------------------------------------------------------------ helpers
def weights(net: nn_xp.Network) -> np.ndarray:
    return np.concatenate([a.ravel() for pair in net.get_weights() for a in pair])


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def regression(m: int = 29, n_in: int = 3, n_out: int = 2, seed: int = 1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, n_in))
    return X, np.sin(X @ rng.normal(size=(n_in, n_out)))


# ------------------------------------------------------------------ shards and the denominator
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_shards_cut_every_batch_into_contiguous_pieces_of_nearly_equal_size(size):
    X, Y = regression(7)
    net = nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64")
    trainers = [net.engine.trainer(net, nn_xp.SGD(), X, Y, batch_size=3, shard=(r, size))
                for r in range(size)]
    assert all(t.batch_rows == -(-3 // size) for t in trainers)  # the largest shard of a batch of 3
    for n in range(0, 12):
        pieces = [t.rows(n) for t in trainers]
        assert pieces[0][0] == 0 and pieces[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # contiguous, in rank order
        sizes = [hi - lo for lo, hi in pieces]
        assert max(sizes) - min(sizes) <= 1
        assert n > 3 or max(sizes) <= trainers[0].batch_rows


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_shards_deltas_are_the_whole_batchs_rows_and_its_losses_sum_to_the_batchs(name):
    loss = LOSSES[name]
    rng = np.random.default_rng(0)
    z = rng.normal(size=(10, 3))
    a = {"sigmoid": 1 / (1 + np.exp(-z)), "softmax": np.exp(z) / np.exp(z).sum(1, keepdims=True),
         "exp": np.exp(z)}.get(loss.fused_with, z)
    y = {"cross_entropy": np.eye(3)[rng.integers(0, 3, 10)]}.get(name, rng.uniform(size=(10, 3)))
    whole, delta = loss.value_and_delta(z, a.copy(), y, xp)
    parts = [loss.value_and_delta(z[lo:hi], a[lo:hi].copy(), y[lo:hi], xp, 10) for lo, hi in
             ((0, 4), (4, 4), (4, 10))]  # an empty shard too
    np.testing.assert_array_equal(np.concatenate([d for _, d in parts]), delta)  # bit for bit
    assert abs(sum(float(v) for v, _ in parts) - float(whole)) <= 1e-14 * abs(float(whole))
    assert float(parts[1][0]) == 0.0  # an empty shard adds nothing, and no NaN


# ------------------------------------------------------------------ the protocol, in threads
def test_local_communicator_sums_broadcasts_and_gathers_identically_on_every_rank():
    def work(comm):
        buf = np.arange(4.0) * (comm.rank + 1) + 0.1
        comm.allreduce(buf)
        root = np.full(3, float(comm.rank))
        comm.bcast(root, root=1)
        obj = comm.bcast_obj({"rank": comm.rank, "list": [comm.rank]}, root=2)
        return buf, root, obj, comm.allgather_obj(comm.rank * 10)

    results, errors = in_threads(3, work)
    assert errors == [None] * 3
    expected = sum(np.arange(4.0) * (r + 1) + 0.1 for r in range(3))
    for buf, root, obj, gathered in results:
        assert buf.tobytes() == results[0][0].tobytes()  # the same bits everywhere
        np.testing.assert_allclose(buf, expected, rtol=1e-15)
        assert root.tolist() == [1.0] * 3 and obj == {"rank": 2, "list": [2]} and gathered == [0, 10, 20]
    assert results[0][2] is not results[1][2]  # a copy per rank, as a real transport gives


def test_abort_ends_every_ranks_collectives():
    def work(comm):
        if comm.rank == 0:
            time.sleep(0.2)
            comm.abort()
            return "aborted"
        comm.allreduce(np.zeros(2))

    results, errors = in_threads(3, work)
    assert results[0] == "aborted"
    assert all(isinstance(e, CommunicatorAborted) and "rank 0 aborted" in str(e) for e in errors[1:])


def test_the_watchdog_aborts_a_collective_that_waits_too_long(capsys):
    def work(comm):
        with comm.watchdog():
            if comm.rank == 1:
                time.sleep(1.5)  # never joins the collective in time
                return "late"
            comm.allreduce(np.zeros(2))

    start = time.monotonic()
    results, errors = in_threads(2, work, timeout=0.5)
    assert time.monotonic() - start < 1.5 + 2
    assert isinstance(errors[0], CommunicatorAborted)
    assert "rank 0 of 2: an allreduce did not complete within NN_XP_COMM_TIMEOUT=0.5 s" in str(errors[0])
    assert "rank 0 of 2: an allreduce did not complete" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True])
def test_a_bad_timeout_is_refused(bad):
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        LocalCommunicator.group(2, timeout=bad)


# ------------------------------------------------------------------ training, in threads
CASES = {  # name -> layer sizes, loss, samples, fit options (optimizers made per rank: they keep state)
    "full batch, SGD": ([3, 6, 2], "mse", 29, dict(epochs=60, learning_rate=0.1)),
    "uneven shards, momentum, validation": ([3, 5, 3], "cross_entropy", 31, dict(
        epochs=6, batch_size=7, optimizer=lambda: nn_xp.SGD(0.05, momentum=0.9), validation_split=0.2)),
    "empty shards, Adam": ([3, 4, 2], "mse", 11, dict(epochs=5, batch_size=2, optimizer="adam",
                                                       learning_rate=0.01)),
}


def _train_case(case: str, backend, comm):
    sizes, loss, m, options = CASES[case]
    X, Y = regression(m, sizes[0], sizes[-1])
    if loss == "cross_entropy":
        Y = np.argmax(Y @ np.ones((sizes[-1], sizes[-1])) + X[:, :1], axis=1) % sizes[-1]
    options = {k: v() if callable(v) else v for k, v in options.items()}
    net = nn_xp.Network(sizes, "tanh", loss=loss, backend=backend.name, device=backend.device,
                        dtype="float64", seed=0)
    history = net.fit(X, Y, comm=comm, **options)
    return weights(net), history.history


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("size", [2, 3])
def test_data_parallel_training_is_one_processs_on_every_backend(backend, case, size):
    if backend.name == "jax":
        pytest.skip("no data-parallel JAX yet: test_jax_says_comm_is_not_supported")
    ref_w, ref_h = _train_case(case, backend, None)
    results, errors = in_threads(size, lambda comm: _train_case(case, backend, comm))
    assert errors == [None] * size
    for w, h in results:
        assert w.tobytes() == results[0][0].tobytes() and h == results[0][1]  # every rank, bit for bit
    w, h = results[0]
    assert rel(w, ref_w) < REL
    assert h.keys() == ref_h.keys()
    for key in h:
        assert len(h[key]) == len(ref_h[key]) and rel(h[key], ref_h[key]) < REL, key


def test_a_mismatch_is_the_same_error_on_every_rank():
    def work(comm):
        X, Y = regression(20, seed=1 if comm.rank != 2 else 2)
        nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64").fit(X, Y, comm=comm, epochs=3)

    _, errors = in_threads(3, work)
    assert all(isinstance(e, ValueError) for e in errors)
    assert len({str(e) for e in errors}) == 1
    message = str(errors[0])
    assert "same network, data and options on every rank" in message and "rank 2 has (20, 3)" in message
    assert "rank 1 has" not in message


def test_a_start_that_fails_on_one_rank_fails_on_every_rank_naming_it():
    def work(comm):
        X, Y = regression(20)
        net = nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64")
        net.fit(X if comm.rank != 1 else X[:, :2], Y, comm=comm, epochs=3)

    _, errors = in_threads(3, work)
    assert isinstance(errors[1], ValueError)
    assert all(isinstance(e, RankFailedError) and "rank 1: ValueError" in str(e) for e in errors[::2])


def test_a_checkpoint_rank_0_cannot_read_fails_every_rank(tmp_path):
    def work(comm):
        X, Y = regression(20)
        net = nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64")
        net.fit(X, Y, comm=comm, epochs=3, resume_from=tmp_path / "missing.ckpt")

    _, errors = in_threads(3, work)
    assert isinstance(errors[0], nn_xp.ModelFileError) and "missing.ckpt" in str(errors[0])
    assert all(isinstance(e, RankFailedError) and "rank 0: ModelFileError" in str(e) for e in errors[1:])


def test_options_must_agree():
    def work(comm):
        X, Y = regression(20)
        nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64").fit(
            X, Y, comm=comm, epochs=3, batch_size=4 if comm.rank == 0 else 5)

    _, errors = in_threads(2, work)
    assert all(isinstance(e, ValueError) and "batch_size: rank 0 has 4; rank 1 has 5" in str(e)
               for e in errors)


def test_rank_0s_weights_optimizer_and_shuffle_reach_every_rank():
    """Other seeds, and a kept optimizer on rank 0 alone: what trains is rank 0's."""
    X, Y = regression(24)

    def make(rank: int) -> nn_xp.Network:
        net = nn_xp.Network([3, 5, 2], "tanh", backend="numpy", dtype="float64", seed=rank)
        net.rng = np.random.default_rng(100 + rank)
        return net

    ref = make(0)
    ref.fit(X, Y, epochs=4, batch_size=5, optimizer=nn_xp.Adam(0.01))

    def work(comm):
        net = make(comm.rank)
        net.fit(X, Y, comm=comm, epochs=4, batch_size=5, optimizer=nn_xp.Adam(0.01))
        return weights(net), net.rng.bit_generator.state, net.optimizer.iterations

    results, errors = in_threads(3, work)
    assert errors == [None] * 3
    for w, state, steps in results:
        assert rel(w, weights(ref)) < REL and state == ref.rng.bit_generator.state and steps == 4 * 5


def test_a_stop_on_one_rank_stops_every_rank_after_the_same_epoch():
    def work(comm):
        def stop_on_rank_1(epoch, logs):
            if comm.rank == 1 and epoch == 2:
                raise nn_xp.StopTraining("enough")

        X, Y = regression(20)
        net = nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64")
        return len(net.fit(X, Y, comm=comm, epochs=50, callbacks=stop_on_rank_1))

    results, errors = in_threads(3, work)
    assert errors == [None] * 3 and results == [3, 3, 3]


def test_a_divergence_is_rolled_back_and_raised_on_every_rank():
    def work(comm):
        X, Y = regression(20)
        net = nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64")
        net.fit(X, Y * 1e200, comm=comm, epochs=50, learning_rate=10.0)

    _, errors = in_threads(2, work)
    assert all(isinstance(e, FloatingPointError) and "rolled back" in str(e) for e in errors)


def test_an_error_on_one_rank_aborts_the_others():
    def work(comm):
        def boom(epoch, logs):
            if comm.rank == 0 and epoch == 3:
                raise KeyError("boom")

        X, Y = regression(20)
        nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64").fit(
            X, Y, comm=comm, epochs=10_000, callbacks=boom)

    start = time.monotonic()
    _, errors = in_threads(3, work)
    assert time.monotonic() - start < 10
    assert isinstance(errors[0], KeyError)
    assert all(isinstance(e, CommunicatorAborted) and "rank 0 of 3 failed: KeyError" in str(e)
               for e in errors[1:])


def test_only_rank_0_writes_checkpoints_and_prints(tmp_path, capsys):
    def work(comm):
        X, Y = regression(20)
        net = nn_xp.Network([3, 4, 2], backend="numpy", dtype="float64")
        net.fit(X, Y, comm=comm, epochs=4, verbose=2, checkpoint=tmp_path / f"rank{comm.rank}.ckpt")

    _, errors = in_threads(3, work)
    assert errors == [None] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.ckpt"]
    assert capsys.readouterr().err.count("epoch 4/4") == 1


# ------------------------------------------------------------------ what comm accepts
def test_comm_none_and_auto_without_a_launcher_are_one_process():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "MPI_")) and k not in ("RANK", "WORLD_SIZE")}
    code = ("import sys, numpy as np, nn_xp; net = nn_xp.Network([1, 3, 1], backend='numpy'); "
            "net.fit(np.ones((4, 1)), np.ones((4, 1)), epochs=2, comm='auto'); "
            "print(sorted(m for m in ('mpi4py', 'torch.distributed') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("comm", ["mpi", 3, object()])
def test_a_comm_that_is_not_one_is_refused(comm):
    net = nn_xp.Network([1, 3, 1], backend="numpy")
    with pytest.raises((TypeError, ValueError), match="comm must be"):
        net.fit(np.ones((4, 1)), np.ones((4, 1)), epochs=1, comm=comm)


def test_jax_says_comm_is_not_supported():
    pytest.importorskip("jax")
    if not backends.available_backends().get("jax", {}).get("usable"):
        pytest.skip("jax is not usable here")
    net = nn_xp.Network([1, 3, 1], backend="jax", dtype="float32")
    with pytest.raises(NotImplementedError, match="compiled"):
        net.fit(np.ones((4, 1)), np.ones((4, 1)), epochs=1, comm=LocalCommunicator.group(1)[0])


def test_a_custom_loss_without_the_denominator_is_refused():
    mse = LOSSES["mse"]
    custom = nn_xp.Loss("mine", lambda z, a, y, xp: mse.value_and_delta(z, a, y, xp), mse.value, None)
    net = nn_xp.Network([1, 3, 1], loss=custom, backend="numpy", activations=["tanh", "identity"])
    with pytest.raises(TypeError, match=r"value_and_delta\(z, a, y, xp, m\)"):
        net.fit(np.ones((4, 1)), np.ones((4, 1)), epochs=1, comm=LocalCommunicator.group(1)[0])


@pytest.mark.parametrize("env, expected", [
    ({"PMI_RANK": "1", "PMI_SIZE": "3", "MPI_LOCALRANKID": "1"}, ("mpi", 1, 3, 1)),
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "0"},
     ("mpi", 2, 4, 0)),
    ({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}, ("torchrun", 5, 8, 1)),
    ({"RANK": "5"}, None),
])
def test_the_launcher_is_read_from_the_environment(monkeypatch, env, expected):
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "RANK",
                 "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = backends.launch()
    assert (None if found is None else (found.launcher, found.rank, found.size, found.local_rank)) == expected


def test_bad_launcher_and_timeout_variables_are_named(monkeypatch):
    monkeypatch.setenv("PMI_RANK", "one")
    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(ValueError, match="PMI_RANK='one'"):
        backends.launch()
    for raw, seconds in (("", backends.DEFAULT_COMM_TIMEOUT), ("2.5", 2.5)):
        monkeypatch.setenv("NN_XP_COMM_TIMEOUT", raw)
        assert backends.comm_timeout() == seconds == LocalCommunicator.group(2)[0].timeout
    for raw in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("NN_XP_COMM_TIMEOUT", raw)
        with pytest.raises(ValueError, match="NN_XP_COMM_TIMEOUT"):
            backends.comm_timeout()


# ------------------------------------------------------------------ NCCL, against stand-ins
class _FakeNccl:
    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_INT32, NCCL_INT64, NCCL_SUM = 6, 7, 8, 2, 4, 0
    calls: list = []

    @staticmethod
    def get_unique_id():
        return tuple(range(128))

    class NcclCommunicator:
        def __init__(self, size, unique_id, rank):
            _FakeNccl.calls.append(("init", size, unique_id[:3], rank))

        def allReduce(self, send, recv, count, datatype, op, stream):  # noqa: N802 - CuPy's names
            _FakeNccl.calls.append(("allReduce", send, recv, count, datatype, op, stream))

        def bcast(self, buff, count, datatype, root, stream):
            _FakeNccl.calls.append(("bcast", buff, count, datatype, root, stream))

        def abort(self):
            _FakeNccl.calls.append(("abort",))


def test_nccl_sums_cupy_buffers_in_place_on_the_current_stream(monkeypatch):
    """The calls CuPy's docs give (``allReduce(send, recv, count, datatype, op, stream)`` with send = recv),
    the unique id from rank 0; host buffers go to MPI. A one-rank MPI world, stand-ins for CuPy and NCCL."""
    MPI = pytest.importorskip("mpi4py.MPI")
    from nn_xp.distributed import NCCLCommunicator

    class ndarray:  # noqa: N801 - what array_api_compat checks for
        def __init__(self, n, dtype):
            self.size, self.dtype = n, np.dtype(dtype)
            self.data = SimpleNamespace(ptr=4096 + n)
            self.flags = SimpleNamespace(c_contiguous=True)

    stream = SimpleNamespace(ptr=77)
    fake_cupy = SimpleNamespace(ndarray=ndarray, cuda=SimpleNamespace(get_current_stream=lambda: stream))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    _FakeNccl.calls = []
    comm = NCCLCommunicator(MPI.COMM_WORLD, nccl=_FakeNccl)
    comm.allreduce(ndarray(10, "float32"))
    comm.bcast(ndarray(5, "float64"), root=0)
    host = np.arange(3.0)
    comm.allreduce(host)  # a one-rank MPI sum: unchanged
    assert host.tolist() == [0.0, 1.0, 2.0]
    assert _FakeNccl.calls == [("init", 1, (0, 1, 2), 0), ("allReduce", 4106, 4106, 10, 7, 0, 77),
                               ("bcast", 4101, 5, 8, 0, 77)]
    with pytest.raises(TypeError, match="NCCL carries"):
        comm.allreduce(ndarray(3, "complex64"))


@pytest.mark.skipif(not nn_xp.available_backends().get("cupy", {}).get("usable"), reason="no CUDA GPU")
def test_a_one_rank_nccl_job_trains_as_one_process():
    MPI = pytest.importorskip("mpi4py.MPI")
    from nn_xp.distributed import NCCLCommunicator, nccl_available

    if not nccl_available():
        pytest.skip("this CuPy has no NCCL")
    X, Y = regression(50)
    nets = [nn_xp.Network([3, 8, 2], backend="cupy", dtype="float64", seed=0) for _ in range(2)]
    nets[0].fit(X, Y, epochs=20, batch_size=7, optimizer="adam")
    with nets[1].backend.context():
        comm = NCCLCommunicator(MPI.COMM_WORLD)
    nets[1].fit(X, Y, epochs=20, batch_size=7, optimizer="adam", comm=comm)
    assert rel(weights(nets[1]), weights(nets[0])) < REL


# ------------------------------------------------------------------ real jobs: mpiexec
def _mpiexec() -> list[str] | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    found = Path(sys.executable).parent / "mpiexec"
    exe = str(found) if found.exists() else shutil.which("mpiexec")
    if exe is None:
        return None
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    return [exe, "--oversubscribe", "--allow-run-as-root"] if "Open MPI" in version else [exe]


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="mpi4py and mpiexec are not installed "
                                                       "(pip install 'nn_xp[mpich]'; CI installs them)")


def _job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "NN_XP_COMM")) and k not in ("RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _mpi_job(n: int, out: Path, *scenarios: str, timeout: float = 120, **env: str):
    start = time.monotonic()
    done = subprocess.run([*MPIEXEC, "-n", str(n), sys.executable, str(WORKER), str(out), *scenarios],
                          env=_job_env(**env), capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - start


@pytest.fixture(scope="module", params=[2, 3], ids=["mpiexec-n2", "mpiexec-n3"])
def mpi_job(request, tmp_path_factory):
    if MPIEXEC is None:
        pytest.skip("mpi4py and mpiexec are not installed")
    n = request.param
    out = tmp_path_factory.mktemp(f"mpi{n}")
    # torch's CPU tensors go to MPI as they are (DLPack); array_api_strict's through the host
    other = "torch" if n == 2 else "array_api_strict"
    backends_here = ["numpy"] + ([f"{other}:device1" if n == 3 else other] if _usable(other) else [])
    done, _ = _mpi_job(n, out, *(f"equal:{b}" for b in backends_here), "resume", "mismatch", "save")
    assert done.returncode == 0, done.stderr[-4000:]
    return SimpleNamespace(n=n, out=out, backends=backends_here)


def _usable(name: str) -> bool:
    return bool(nn_xp.available_backends().get(name, {}).get("usable"))


def _check_equal(out: Path, n: int, backend: str) -> None:
    ranks = [(np.load(out / f"equal-{backend}-rank{r}.npz"),
              json.loads((out / f"equal-{backend}-rank{r}.json").read_text())) for r in range(n)]
    arrays, histories = ranks[0]
    cases = sorted({k.split("/")[0] for k in arrays.files})
    assert len(cases) == 4
    for case in cases:
        ref, dist = arrays[f"{case}/ref"], arrays[f"{case}/dist"]
        assert rel(dist, ref) < REL, case
        h_ref, h_dist = histories[f"{case}/ref"], histories[f"{case}/dist"]
        assert h_dist["epoch"] == h_ref["epoch"], case  # early stopping: the same epoch
        for key, values in h_ref["history"].items():
            assert rel(h_dist["history"][key], values) < REL, (case, key)
        for other_arrays, other_histories in ranks[1:]:  # every rank, bit for bit
            assert other_arrays[f"{case}/dist"].tobytes() == dist.tobytes(), case
            assert other_histories[f"{case}/dist"] == h_dist, case


@needs_mpi
def test_mpi_training_equals_one_process_and_ranks_are_bit_identical(mpi_job):
    for backend in mpi_job.backends:
        _check_equal(mpi_job.out, mpi_job.n, backend)


@needs_mpi
@pytest.mark.skipif(not _usable("cupy"), reason="no CUDA GPU")
def test_mpi_two_ranks_on_one_gpu_over_host_staging_train_as_one_process(tmp_path):
    done, _ = _mpi_job(2, tmp_path, "equal:cupy-staged", timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    _check_equal(tmp_path, 2, "cupy-staged")


@needs_mpi
def test_mpi_checkpoints_are_rank_0s_and_resume_from_its_file(mpi_job):
    for r in range(mpi_job.n):
        seen = json.loads((mpi_job.out / f"resume-rank{r}.json").read_text())
        arrays = np.load(mpi_job.out / f"resume-rank{r}.npz")
        assert len(seen["saves"]) == (3 if r == 0 else 0)
        assert seen["epoch"] == list(range(12)) and seen["optimizer"] == "Adam"
        assert rel(arrays["dist"], arrays["ref"]) < REL
        for key, values in seen["ref"].items():
            assert rel(seen["history"][key], values) < REL


@needs_mpi
def test_mpi_mismatch_is_reported_on_every_rank(mpi_job):
    seen = [json.loads((mpi_job.out / f"mismatch-rank{r}.json").read_text()) for r in range(mpi_job.n)]
    assert len({s["data"] for s in seen}) == 1
    assert seen[0]["data"].startswith("ValueError: fit(comm=...) needs the same network, data and options")
    assert "X: rank 0 has (30, 3) float64" in seen[0]["data"] and "rank 1 has (30, 3)" in seen[0]["data"]
    assert seen[1]["options"] == "ValueError: epochs must be a positive integer, got 0"
    for r in (0, *range(2, mpi_job.n)):
        assert seen[r]["options"].startswith("RankFailedError")
        assert "rank 1: ValueError: epochs" in seen[r]["options"]


@needs_mpi
def test_mpi_ranks_saving_the_same_files_at_once_leave_whole_files(mpi_job):
    for r in range(mpi_job.n):
        seen = json.loads((mpi_job.out / f"save-rank{r}.json").read_text())
        assert seen == {"same": True, "epoch": 19, "tmp": []}


@needs_mpi
@pytest.mark.parametrize("scenario", ["fail", "stuck"])
def test_mpi_a_failing_or_stuck_rank_ends_the_job_within_seconds(tmp_path, scenario):
    done, elapsed = _mpi_job(2, tmp_path, scenario, timeout=90, NN_XP_COMM_TIMEOUT="2")
    assert done.returncode != 0
    assert elapsed < 30, elapsed
    assert not list(tmp_path.glob("finished-*"))
    if scenario == "fail":
        assert "nn_xp: rank 1 of 2 failed: RuntimeError: boom on rank 1; aborting the job" in done.stderr
    else:
        assert "rank 0 of 2: an allreduce did not complete within NN_XP_COMM_TIMEOUT=2 s" in done.stderr


# ------------------------------------------------------------------ real jobs: torch.distributed over gloo
def _torch_job(n: int, out: Path, *scenarios: str, timeout: float = 120, **env: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = _job_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(n), **env)
    start = time.monotonic()
    ranks = [subprocess.Popen([sys.executable, str(WORKER), str(out), *scenarios],
                              env=dict(base, RANK=str(r), LOCAL_RANK=str(r)), stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True) for r in range(n)]
    try:
        errors = [p.communicate(timeout=timeout)[1] for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    return [p.returncode for p in ranks], "".join(errors), time.monotonic() - start


needs_torch = pytest.mark.skipif(not _usable("torch"), reason="torch is not installed")


@needs_torch
def test_torch_gloo_training_equals_one_process(tmp_path):
    codes, errors, _ = _torch_job(2, tmp_path, "equal:torch", "mismatch")
    assert codes == [0, 0], errors[-4000:]
    _check_equal(tmp_path, 2, "torch")
    seen = [json.loads((tmp_path / f"mismatch-rank{r}.json").read_text()) for r in range(2)]
    assert seen[0]["data"] == seen[1]["data"] and "X: rank 0 has" in seen[0]["data"]


@needs_torch
def test_torch_gloo_a_failing_rank_ends_the_job(tmp_path):
    codes, errors, elapsed = _torch_job(2, tmp_path, "fail", timeout=90)
    assert all(code != 0 for code in codes)
    assert elapsed < 40, elapsed
    assert "nn_xp: rank 1 of 2 failed: RuntimeError: boom on rank 1; aborting the job" in errors
    assert not list(tmp_path.glob("finished-*"))


def test_every_communicator_writes_the_whole_protocol():
    from nn_xp.distributed import MPICommunicator, NCCLCommunicator, TorchCommunicator

    for cls in (LocalCommunicator, MPICommunicator, NCCLCommunicator, TorchCommunicator):
        assert issubclass(cls, Communicator)
        for name in ("_allreduce", "_bcast", "_bcast_obj", "_allgather_obj", "abort"):
            assert getattr(cls, name) is not getattr(Communicator, name), (cls.__name__, name)
