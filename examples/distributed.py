"""Data-parallel training: the same script on every rank, one process's result.

Trains a 64-64-10 softmax network on the 8x8 digits (``examples/data/digits.npz``) with Adam on
shuffled mini-batches of ``--batch-size`` rows, the *global* batch, cut into one shard per rank. Every
rank loads all of the data; ``fit(comm="auto")`` finds the launcher, and rank 0 prints and writes the
checkpoint. With ``--check``, every rank also trains alone and rank 0 prints how far apart the two are
(float64: about 1e-15).

    python examples/distributed.py                                    # one process
    mpiexec -n 4 python examples/distributed.py --check               # MPI: pip install 'nn_xp[mpich]'
    torchrun --nproc-per-node 4 examples/distributed.py --backend torch --check   # torch.distributed

On GPUs, one per rank: ``--backend cupy`` under mpiexec (NCCL), ``--backend torch --device cuda`` under
torchrun; each rank takes the GPU of its local rank.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import nn_xp
from nn_xp.distributed import communicator, launch

DATA = Path(__file__).resolve().parent / "data" / "digits.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch, over all ranks")
    parser.add_argument("--backend", default="numpy", help="numpy, cupy or torch")
    parser.add_argument("--device", default=None, help="cuda: each rank takes the GPU of its local rank")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint file, written by rank 0")
    parser.add_argument("--check", action="store_true", help="also train in one process and compare")
    args = parser.parse_args()

    started = launch()  # None under a plain `python`
    device = args.device
    if device == "cuda" or (args.backend == "cupy" and started is not None):
        local = 0 if started is None else started.local_rank
        device = f"cuda:{local}" if args.backend == "torch" else local
    with np.load(DATA) as data:
        X, y = data["data"] / 16.0, data["target"].astype(np.int64)

    def train(comm: object) -> tuple[nn_xp.Network, nn_xp.History, float]:
        net = nn_xp.Network([64, 64, 10], "relu", loss="cross_entropy", backend=args.backend, device=device,
                            dtype="float64", seed=0)
        start = time.perf_counter()
        history = net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, optimizer="adam",
                          learning_rate=1e-3, validation_split=0.2, checkpoint=args.checkpoint, comm=comm)
        return net, history, time.perf_counter() - start

    net, history, seconds = train("auto")
    comm = communicator("auto", net.xp, net.device)  # the one fit used (None: one process)
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    if args.check:
        alone, _, _ = train(None)
        gap = max(float(np.max(np.abs(a - b))) for pair, other in zip(net.get_weights(), alone.get_weights())
                  for a, b in zip(pair, other))
    if rank == 0:
        share = -(-args.batch_size // size)
        print(f"{size} rank(s), batch {args.batch_size} ({share} rows per rank at most): "
              f"{seconds:.2f} s for {args.epochs} epochs")
        last = {k: v[-1] for k, v in history.history.items()}
        print(f"loss {last['loss']:.6f}, val_accuracy {last['val_accuracy']:.4f}")
        if args.check:
            print(f"largest difference from one process's weights: {gap:.2e}")


if __name__ == "__main__":
    main()
