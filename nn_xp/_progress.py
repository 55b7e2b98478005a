"""Per-epoch progress: a tqdm bar on a terminal, one plain line per epoch otherwise; every line fits in 80
columns (the terminal's width under a bar).

The metrics are shortened to fit: 6 significant digits, then 4, then ``accuracy`` as
``acc``, then 3 digits; a line that still does not fit is wrapped (plain lines) or cut
(the bar's postfix, which shares the line with the bar).

``verbose=3`` on a terminal adds a second bar under the epochs' that counts each epoch's
mini-batches as the loop launches them: it advances on the host and reads nothing back
from the device (no synchronisation per batch), so on an asynchronous device (a GPU) it
runs ahead of the work by as many steps as the device has queued. A compiled engine (JAX)
runs whole epochs per call, with no host step per batch: it has the epochs' bar only.
"""
from __future__ import annotations

import shutil
import sys
import textwrap
from typing import Any

__all__ = ["LINE_WIDTH", "Progress", "format_logs"]

#: the width of a plain progress line (a terminal's default, and what a log file is read in)
LINE_WIDTH = 80
#: what a bar takes besides its postfix: "100%|####| 1000/1000 [00:01<00:00, 973.2epoch/s, " and some room
_BAR_ROOM = 52
_SHORT = (("accuracy", "acc"),)


def format_logs(logs: dict[str, float], width: int) -> str:
    """``key=value`` pairs, shortened (see the module) until they fit in ``width`` columns, if they can."""
    text = ""
    for digits, short in ((6, False), (4, False), (4, True), (3, True)):
        pairs = []
        for key, value in logs.items():
            if short:
                for long, abbreviation in _SHORT:
                    key = key.replace(long, abbreviation)
            pairs.append(f"{key}={value:.{digits}g}")
        text = " ".join(pairs)
        if len(text) <= width:
            break
    return text


class Progress:
    """``verbose=0``: nothing; ``1``: tqdm when stderr is a terminal, else lines; ``2``: lines; ``3``: as 1,
    with a per-batch bar under the bar (:meth:`follow`).

    ``show=False`` (a data-parallel rank other than 0) prints nothing, but is as ``silent`` as
    ``verbose`` says, so that every rank's loop takes the same steps.
    """

    def __init__(self, epochs: int, verbose: int, initial: int = 0, show: bool = True) -> None:
        self.epochs = epochs
        self.bar: Any = None
        self.batches: Any = None  # the per-batch bar (verbose=3)
        self.lines = self.per_batch = False
        self.silent = not verbose
        if not verbose or not show:
            return
        if verbose in (1, 3) and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, initial=initial, unit="epoch", file=sys.stderr)
            self.per_batch = verbose == 3
        else:
            self.lines = True

    def follow(self, trainer: Any) -> None:
        """With ``verbose=3`` on a terminal and mini-batches: count ``trainer``'s batches as they are launched
        (its ``batch`` wrapped by a host-side counter; nothing is read from the device)."""
        if not self.per_batch or trainer.full_batch or getattr(trainer, "compiles", False):
            return
        from tqdm.auto import tqdm

        steps = -(-trainer.m // trainer.batch_size)
        bar = self.batches = tqdm(total=steps, unit="batch", leave=False, position=1, file=sys.stderr)
        step = trainer.batch

        def counted(*args: Any, **kwargs: Any) -> Any:
            result = step(*args, **kwargs)
            bar.update(1)
            return result

        trainer.batch = counted

    def update(self, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            width = shutil.get_terminal_size((LINE_WIDTH, 24)).columns
            room = max(16, width - _BAR_ROOM)
            text = format_logs(logs, room)
            self.bar.set_postfix_str(text if len(text) <= room else text[:room - 1] + "…", refresh=False)
            self.bar.update(1)
            if self.batches is not None:
                self.batches.reset()
        elif self.lines:
            head = f"epoch {epoch + 1}/{self.epochs} "
            text = head + format_logs(logs, LINE_WIDTH - len(head))
            lines = textwrap.wrap(text, LINE_WIDTH, subsequent_indent="    ", break_long_words=False,
                                  break_on_hyphens=False)
            print("\n".join(lines), file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        """A line of its own (above the bar, where there is one), wrapped to fit as the epochs' lines are."""
        if self.bar is None and not self.lines:
            return
        width = shutil.get_terminal_size((LINE_WIDTH, 24)).columns if self.bar is not None else LINE_WIDTH
        text = "\n".join(textwrap.wrap(message, max(width, 40), subsequent_indent="    ",
                                       break_long_words=False, break_on_hyphens=False))
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.batches is not None:
            self.batches.close()
        if self.bar is not None:
            self.bar.close()
