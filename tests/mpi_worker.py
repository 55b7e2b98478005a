"""One rank of a data-parallel job for tests/test_distributed.py: ``python mpi_worker.py OUT SCENARIO...``.

Started by ``mpiexec -n N`` or as torch.distributed ranks (``RANK``/``WORLD_SIZE`` in the environment),
it trains with ``comm="auto"`` and writes what this rank saw to ``OUT/<scenario>-rank<r>.*``; the test
compares the ranks' files with each other and with one process's training, which every rank also runs.

Scenarios: ``equal:BACKEND`` (SGD, momentum, Adam; mse and cross-entropy; full batch, uneven and empty
shards; validation; early stopping), ``resume`` (checkpoints written by rank 0 alone, resumed from rank
0's file), ``mismatch`` (other data on rank 1, bad options on rank 1), ``save`` (every rank saving the
same files at once), ``fail`` (rank 1's callback raises), ``stuck`` (rank 1's callback sleeps).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import nn_xp
from nn_xp import training
from nn_xp.distributed import MPICommunicator, communicator

BACKENDS = {"numpy": ("numpy", None), "torch": ("torch", "cpu"),
            "array_api_strict:device1": ("array_api_strict", "device1"),
            "cupy": ("cupy", None), "cupy-staged": ("cupy", None)}  # staged: MPI through the host, no NCCL


def data(m: int, n_in: int, n_out: int, classes: bool, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, n_in))
    if classes:
        return X, np.argmax(X @ rng.normal(size=(n_in, n_out)), axis=1)
    return X, np.sin(X @ rng.normal(size=(n_in, n_out)))


def flat_weights(net: nn_xp.Network) -> np.ndarray:
    return np.concatenate([a.ravel() for pair in net.get_weights() for a in pair])


#: name -> (layer sizes, loss, samples, fit options); optimizers are made per fit (they keep state)
CASES = {
    "mse_sgd_full": ([3, 8, 1], "mse", 37, dict(epochs=300, learning_rate=0.1)),
    "ce_momentum_uneven": ([4, 6, 3], "cross_entropy", 40,
                           dict(epochs=30, batch_size=7, optimizer=lambda: nn_xp.SGD(0.05, momentum=0.9),
                                validation_split=0.2)),
    "mse_adam_empty": ([3, 5, 2], "mse", 23, dict(epochs=10, batch_size=2, optimizer="adam",
                                                  learning_rate=0.01, validation_data=2)),
    "ce_adam_full_stop": ([4, 6, 3], "cross_entropy", 31,
                          dict(epochs=200, optimizer="adam", learning_rate=0.05,
                               callbacks=lambda: [nn_xp.EarlyStopping("loss", patience=2, min_delta=0.05)])),
}


def train_case(name: str, backend: str, comm: object) -> tuple[np.ndarray, dict]:
    sizes, loss, m, options = CASES[name]
    X, Y = data(m, sizes[0], sizes[-1], loss == "cross_entropy")
    options = {k: v() if callable(v) else v for k, v in options.items()}
    if "validation_data" in options:  # the last rows: fewer than the ranks
        k = options["validation_data"]
        X, Y, options["validation_data"] = X[:-k], Y[:-k], (X[-k:], Y[-k:])
    name_, device = BACKENDS[backend]
    net = nn_xp.Network(sizes, "tanh", loss=loss, backend=name_, device=device, dtype="float64", seed=0)
    history = net.fit(X, Y, comm=comm, **options)
    return flat_weights(net), {"history": history.history, "epoch": history.epoch}


def equal(out: Path, rank: int, backend: str) -> None:
    arrays, histories = {}, {}
    comm = MPICommunicator() if backend == "cupy-staged" else "auto"
    for name in CASES:
        arrays[f"{name}/ref"], histories[f"{name}/ref"] = train_case(name, backend, None)
        arrays[f"{name}/dist"], histories[f"{name}/dist"] = train_case(name, backend, comm)
    np.savez(out / f"equal-{backend}-rank{rank}.npz", **arrays)
    (out / f"equal-{backend}-rank{rank}.json").write_text(json.dumps(histories))


def resume(out: Path, rank: int) -> None:
    X, Y = data(41, 3, 2, False)
    saves = []
    real_save = training.save_checkpoint

    def counted(net, path, *args, **kwargs):  # noqa: ANN001
        saves.append(str(path))
        real_save(net, path, *args, **kwargs)

    training.save_checkpoint = counted
    ck = out / "resume.ckpt"
    try:
        first = nn_xp.Network([3, 6, 2], "tanh", backend="numpy", dtype="float64", seed=0)
        first.fit(X, Y, comm="auto", epochs=6, batch_size=5, optimizer="adam", learning_rate=0.01,
                  checkpoint=ck, checkpoint_every=2)
    finally:
        training.save_checkpoint = real_save
    # another start on every rank, and a file only rank 0 has: all of it comes from rank 0's checkpoint
    net = nn_xp.Network([3, 6, 2], "tanh", backend="numpy", dtype="float64", seed=100 + rank)
    source = ck if rank == 0 else out / f"not-there-{rank}.ckpt"
    history = net.fit(X, Y, comm="auto", epochs=12, batch_size=5, resume_from=source)
    ref = nn_xp.Network([3, 6, 2], "tanh", backend="numpy", dtype="float64", seed=0)
    ref_history = ref.fit(X, Y, epochs=12, batch_size=5, optimizer="adam", learning_rate=0.01)
    np.savez(out / f"resume-rank{rank}.npz", dist=flat_weights(net), ref=flat_weights(ref))
    (out / f"resume-rank{rank}.json").write_text(json.dumps({
        "saves": saves, "history": history.history, "ref": ref_history.history, "epoch": history.epoch,
        "optimizer": type(net.optimizer).__name__}))


def mismatch(out: Path, rank: int) -> None:
    messages = {}
    X, Y = data(30, 3, 1, False, seed=1 if rank != 1 else 2)
    net = nn_xp.Network([3, 4, 1], backend="numpy", dtype="float64")
    for what, kwargs in (("data", {}), ("options", {"epochs": 0 if rank == 1 else 5})):
        try:
            net.fit(X if what == "data" else data(30, 3, 1, False)[0],
                    Y if what == "data" else data(30, 3, 1, False)[1], comm="auto", **{"epochs": 5, **kwargs})
            messages[what] = None
        except Exception as exc:  # the same error (or its report) on every rank, never a hang
            messages[what] = f"{type(exc).__name__}: {exc}"
    (out / f"mismatch-rank{rank}.json").write_text(json.dumps(messages))


def save(out: Path, rank: int) -> None:
    comm = communicator("auto")
    net = nn_xp.Network([3, 4, 1], backend="numpy", dtype="float64", seed=0)
    net.fit(*data(20, 3, 1, False), comm=comm, epochs=3)
    for i in range(20):  # every rank at once, the same two files
        nn_xp.save(net, out / "shared.nnxp")
        nn_xp.save_checkpoint(net, out / "shared.ckpt", net.optimizer, i, net.history)
    comm.allgather_obj(None)  # every rank done writing
    loaded = nn_xp.load(out / "shared.nnxp")
    epoch, _ = nn_xp.load_checkpoint(out / "shared.ckpt", loaded, None)
    ok = bool(np.array_equal(flat_weights(loaded), flat_weights(net)))
    leftovers = sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))
    (out / f"save-rank{rank}.json").write_text(json.dumps({"same": ok, "epoch": epoch, "tmp": leftovers}))


def fail(out: Path, rank: int, sleep: bool = False) -> None:
    def callback(epoch: int, logs: dict) -> None:
        if rank == 1 and epoch == 3:
            if sleep:
                time.sleep(120)  # outside any collective: the others' watchdog must end the job
            raise RuntimeError("boom on rank 1")

    (out / f"started-rank{rank}").write_text(str(time.time()))
    net = nn_xp.Network([3, 4, 1], backend="numpy", dtype="float64")
    net.fit(*data(20, 3, 1, False), comm="auto", epochs=1000, callbacks=callback)
    (out / f"finished-rank{rank}").write_text("the job went on")


def main() -> None:
    out, scenarios = Path(sys.argv[1]), sys.argv[2:]
    rank = communicator("auto").rank
    for scenario in scenarios:
        name, _, arg = scenario.partition(":")
        if name == "equal":
            equal(out, rank, arg)
        elif name in ("resume", "mismatch", "save"):
            globals()[name](out, rank)
        elif name in ("fail", "stuck"):
            fail(out, rank, sleep=name == "stuck")
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main()
