"""``python -m nn_xp``: which backends are installed and usable here, what ``Network()`` will do, and what
``auto`` picks."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .backends import environment, format_backends, format_environment

_DESCRIPTION = """\
Show what nn_xp.Network() will do in this environment: the NN_XP_BACKEND and NN_XP_DEVICE in force,
whether they work, the backend and device they give and the engine fit runs on it; then every backend,
whether it is installed and usable here (and why not, with the fix), and what backend='auto' picks
(CuPy when a CUDA GPU answers, else NumPy).
"""

_EPILOG = """\
environment variables:
  NN_XP_BACKEND   the backend of Network() without backend=: auto, numpy, cupy, torch, array_api_strict, jax
  NN_XP_DEVICE    its device (with NN_XP_BACKEND or auto): cpu, cuda:1, a GPU index, device1, tpu:0

exit status: 0, or 1 when Network() would fail here.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; 1 when ``Network()`` would fail with the environment in force."""
    parser = argparse.ArgumentParser(prog="python -m nn_xp", description=_DESCRIPTION, epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    found = environment()
    here = format_environment(found)
    if found["backend"] is not None:
        here += f"; fit's engine: {_engine(found['backend'])}"
    print(format_backends(above_auto=here))  # the table, then what Network() does, then what auto picks
    return 0 if found["error"] is None else 1


def _engine(backend) -> str:
    from .engine import select_engine

    try:
        return select_engine(backend, backend.dtype("float32")).name
    except Exception as exc:  # a backend that resolves but whose engine cannot start: say so, go on
        return f"none ({type(exc).__name__}: {exc})"


if __name__ == "__main__":
    sys.exit(main())
