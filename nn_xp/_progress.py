"""Per-epoch progress: a tqdm bar on a terminal, one plain line per epoch otherwise."""
from __future__ import annotations

import sys
from typing import Any


class Progress:
    """``verbose=0``: nothing; ``1``: tqdm when stderr is a terminal, else lines; ``2``: lines.

    ``show=False`` (a data-parallel rank other than 0) prints nothing, but is as ``silent`` as
    ``verbose`` says, so that every rank's loop takes the same steps.
    """

    def __init__(self, epochs: int, verbose: int, initial: int = 0, show: bool = True) -> None:
        self.epochs = epochs
        self.bar: Any = None
        self.lines = False
        self.silent = not verbose
        if not verbose or not show:
            return
        if verbose == 1 and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, initial=initial, unit="epoch", file=sys.stderr)
        else:
            self.lines = True

    @staticmethod
    def _format(logs: dict[str, float]) -> str:
        return " ".join(f"{k}={v:.6g}" for k, v in logs.items())

    def update(self, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self._format(logs), refresh=False)
            self.bar.update(1)
        elif self.lines:
            print(f"epoch {epoch + 1}/{self.epochs} {self._format(logs)}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        """A line of its own (above the bar, where there is one)."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        elif self.lines:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
