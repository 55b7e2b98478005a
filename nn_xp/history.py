"""The record of a training run, as Keras users expect it."""
from __future__ import annotations

__all__ = ["History"]


class History:
    """Per-epoch metrics: ``history.history["loss"]``, ``history.epoch``.

    ``history["loss"][k]`` is the mean training loss seen during epoch ``k``;
    in full-batch mode that is the loss of the weights at the start of the epoch,
    the value the blog's hook prints at step ``k``.
    """

    def __init__(self, history: dict[str, list[float]] | None = None, epoch: list[int] | None = None) -> None:
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.epoch: list[int] = list(epoch or [])

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        last = {k: v[-1] for k, v in self.history.items() if v}
        return f"History(epochs={len(self)}, last={last})"

    def truncate(self, epoch: int) -> None:
        """Forget every epoch from ``epoch`` on (the weights were rolled back to its start)."""
        kept = sum(1 for e in self.epoch if e < epoch)
        for column in self.history.values():
            del column[kept:]
        del self.epoch[kept:]
