"""net.to(backend, device): parameters and optimizer state move together, in place."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import SINE_X, SINE_Y, assert_on_backend

import nn_xp


def test_to_moves_parameters_and_optimizer_state(backend):
    kwargs = dict(epochs=3, batch_size=25, optimizer="adam", learning_rate=0.01)
    net = nn_xp.Network([1, 8, 1], "tanh", backend="numpy", dtype="float64", seed=3)
    ref = nn_xp.Network([1, 8, 1], "tanh", backend="numpy", dtype="float64", seed=3)
    net.fit(SINE_X, SINE_Y, **kwargs)
    ref.fit(SINE_X, SINE_Y, **kwargs)

    assert net.to(backend.name, backend.device) is net
    assert net.backend.name == backend.name and net.device == backend.device
    for p in net.params.values():
        assert_on_backend(p, backend, "float64")
    for slots in net.optimizer.state.values():
        for arr in slots.values():
            assert_on_backend(arr, backend, "float64")

    # training continues on the new backend exactly as it would have on the old one
    net.fit(SINE_X, SINE_Y, epochs=2, batch_size=25)
    ref.fit(SINE_X, SINE_Y, epochs=2, batch_size=25)
    for (W, b), (Wr, br) in zip(net.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(W, Wr, rtol=1e-10)
        np.testing.assert_allclose(b, br, rtol=1e-10, atol=1e-14)
    assert net.optimizer.iterations == ref.optimizer.iterations == 5 * 4


def test_to_an_unusable_backend_keeps_the_network(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)
    net = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64")
    before = net.get_weights()
    with pytest.raises(nn_xp.BackendUnavailableError):
        net.to("cupy")
    assert net.backend.name == "numpy"
    np.testing.assert_array_equal(net.get_weights()[0][0], before[0][0])
    assert net.predict(SINE_X).shape == (100, 1)
