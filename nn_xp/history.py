"""The record of a training run, as Keras users expect it."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["History"]


class History:
    """Per-epoch metrics: ``history.history["loss"]``, ``history.epoch``.

    ``fit`` returns it, and ``net.history`` is the latest fit's. ``history.history``
    maps each key (``loss``, then the metrics, e.g. ``accuracy``; with validation
    data the same keys prefixed ``val_``) to one host float per epoch, and
    ``history.epoch`` lists the epochs' numbers, from 0 (``resume_from`` continues
    the count). ``history["loss"]`` is short for ``history.history["loss"]``.

    ``history["loss"][k]`` is the mean training loss seen during epoch ``k``;
    in full-batch mode that is the loss of the weights at the start of the epoch,
    the value the blog's hook prints at step ``k``. Validation values are those
    of the weights at the end of the epoch.
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

    def plot(self, keys: str | Sequence[str] | None = None, ax: Any = None) -> Any:
        """Draw the curves with matplotlib (``pip install 'nn_xp[plot]'``): each key against the epoch
        (from 1, as the progress lines count).

        Parameters
        ----------
        keys : str or sequence of str, optional
            History keys to draw; default all. Without ``ax``, each metric gets its
            own axes, its ``val_`` curve with it (``loss`` and ``val_loss`` together).
        ax : matplotlib Axes, optional
            Draw every key on these axes instead.

        Returns
        -------
        matplotlib.figure.Figure
            The figure drawn on (``fig.savefig("curves.png")``).

        Examples
        --------
        >>> fig = net.fit(X, Y, epochs=100, validation_split=0.2).plot()  # doctest: +SKIP
        """
        keys = list(self.history) if keys is None else [keys] if isinstance(keys, str) else list(keys)
        unknown = [k for k in keys if k not in self.history]
        if unknown:
            raise KeyError(f"History.plot: no key {unknown[0]!r} in this history, which has "
                           f"{list(self.history)}")
        if not keys or not self.epoch:
            raise ValueError("History.plot: nothing to draw (the history has no epochs, or keys is empty)")
        groups: dict[str, list[str]] = {}
        for key in keys:
            groups.setdefault(key[4:] if key.startswith("val_") else key, []).append(key)
        if ax is None:
            plt = _pyplot()
            fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.5), squeeze=False)
            pairs = list(zip(axes[0], groups.items()))
        else:
            fig, pairs = ax.figure, [(ax, ("", keys))]
        x = [e + 1 for e in self.epoch]
        for axes_, (name, group) in pairs:
            for key in group:
                axes_.plot(x, self.history[key], label=key)
            axes_.set_xlabel("epoch")
            if name:
                axes_.set_title(name)
            axes_.legend()
        if ax is None:
            fig.tight_layout()  # the axis labels inside the figure
        return fig

    def truncate(self, epoch: int) -> None:
        """Forget every epoch from ``epoch`` on (the weights were rolled back to its start)."""
        kept = sum(1 for e in self.epoch if e < epoch)
        for column in self.history.values():
            del column[kept:]
        del self.epoch[kept:]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("History.plot draws with matplotlib, which is not installed: pip install "
                          "'nn_xp[plot]' (or pip install matplotlib)") from exc
    return plt
