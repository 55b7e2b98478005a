"""One ``backend`` fixture (and ``xp``), parametrised over the backends available here.

``NN_XP_TEST_BACKENDS`` (comma-separated, or a JSON list) selects them, e.g.
``NN_XP_TEST_BACKENDS=cupy,numpy``. A backend asked for there but not usable
fails the run; without it, every known backend runs where usable and is
skipped, with the reason, where not.

``array_api_strict`` runs on its default device and on ``Device("device1")``:
an array created without ``device=`` or a hidden host round trip then fails on
a laptop the way it would on a GPU.

``jax`` runs in JAX's 64-bit mode (the tests are float64): ``JAX_ENABLE_X64=1``
is set here unless the environment says otherwise, before anything imports jax.
"""
from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("JAX_ENABLE_X64", "1")  # read by jax when it is imported, which nn_xp does lazily

import nn_xp  # noqa: E402
from nn_xp.backends import BackendUnavailableError, resolve_backend  # noqa: E402

# test id -> (backend name, device)
SPECS = {
    "numpy": ("numpy", None),
    "array_api_strict": ("array_api_strict", None),
    "array_api_strict:device1": ("array_api_strict", "device1"),
    "torch": ("torch", "cpu"),
    "torch:cuda": ("torch", "cuda"),
    "cupy": ("cupy", None),
    "jax": ("jax", None),
}


def _requested() -> list[str] | None:
    raw = os.environ.get("NN_XP_TEST_BACKENDS", "").strip()
    if not raw:
        return None
    names = json.loads(raw) if raw.startswith("[") else [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise pytest.UsageError(f"NN_XP_TEST_BACKENDS names unknown backends {unknown}; valid: {list(SPECS)}")
    return names


def _try(test_id: str):
    name, device = SPECS[test_id]
    try:
        return resolve_backend(name, device), None
    except (BackendUnavailableError, ValueError) as exc:
        return None, str(exc)
    except Warning as warning:  # filterwarnings=error makes a warning at import (CuPy has some) a crash here
        first = next((line.strip() for line in str(warning).splitlines() if any(map(str.isalpha, line))), "")
        return None, (f"importing {name} warned, which filterwarnings=error makes an error "
                      f"({type(warning).__name__}: {first}); fix: remove what it names "
                      f"(python -c 'import {name}' shows the whole warning)")


def pytest_configure(config):
    requested = _requested()
    config._nn_xp_params = []
    for test_id in requested or list(SPECS):
        backend, reason = _try(test_id)
        if backend is None and requested is not None:
            raise pytest.UsageError(f"NN_XP_TEST_BACKENDS asks for {test_id!r}, which is not usable here: "
                                    f"{reason}")
        marks = [] if backend is not None else [pytest.mark.skip(reason=f"{test_id} not available: {reason}")]
        config._nn_xp_params.append(pytest.param(test_id, id=test_id, marks=marks))


def pytest_report_header(config):
    ids = [p.values[0] for p in config._nn_xp_params if not p.marks]
    return f"nn_xp test backends: {', '.join(ids)}"


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend_id", metafunc.config._nn_xp_params)


@pytest.fixture
def backend(backend_id, monkeypatch) -> nn_xp.Backend:
    """The resolved backend under test; ``NN_XP_BACKEND`` / ``NN_XP_DEVICE`` are cleared around each test."""
    monkeypatch.delenv("NN_XP_BACKEND", raising=False)
    monkeypatch.delenv("NN_XP_DEVICE", raising=False)
    name, device = SPECS[backend_id]
    return resolve_backend(name, device)


@pytest.fixture
def xp(backend):
    return backend.xp
