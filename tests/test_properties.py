"""Property-based tests: random architectures, activations, batch sizes, dtypes, on every backend."""
from __future__ import annotations

import math

import numpy as np
from helpers import make_net
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_core import numerical_gradient

from nn_xp import to_numpy

# the backend fixture only selects a namespace: reusing it across examples is safe
SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

HIDDEN = st.sampled_from(["identity", "sigmoid", "tanh", "relu", "leaky_relu"])
HEADS = st.sampled_from([("identity", "mse"), ("sigmoid", "binary_cross_entropy"),
                         ("softmax", "cross_entropy"), ("tanh", "mse"), ("identity", "mae"),
                         ("identity", "huber")])


@st.composite
def problems(draw, max_units=5):
    """A small network description and data to match it."""
    n_in = draw(st.integers(1, 4))
    hidden = draw(st.lists(st.integers(1, max_units), min_size=0, max_size=2))
    out_act, loss = draw(HEADS)
    n_out = draw(st.integers(2 if loss == "cross_entropy" else 1, 3))
    acts = [draw(HIDDEN) for _ in hidden] + [out_act]
    m = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n_in))
    if loss == "cross_entropy":
        Y = np.eye(n_out)[rng.integers(0, n_out, m)]
    elif loss == "binary_cross_entropy":
        Y = (rng.uniform(size=(m, n_out)) > 0.5).astype(float)
    else:
        Y = rng.uniform(-0.9, 0.9, (m, n_out))
    return [n_in, *hidden, n_out], acts, loss, X, Y, seed


@SETTINGS
@given(problem=problems())
def test_gradients_match_finite_differences(backend, problem):
    sizes, acts, loss, X, Y, seed = problem
    net = make_net(backend, sizes, acts, loss=loss, seed=seed)
    values = net.evaluate(backend.asarray(X, dtype=net.dtype))
    for act, (Z, _) in zip(acts, values[1:]):  # finite differences across relu's kink are meaningless
        assume(act not in ("relu", "leaky_relu") or np.min(np.abs(to_numpy(Z))) > 1e-3)
    err = np.abs(to_numpy(values[-1][1]) - Y)  # nor across mae's kink at 0, or huber's at delta = 1
    assume(loss not in ("mae", "huber") or np.min(np.abs(err - (1.0 if loss == "huber" else 0.0))) > 1e-3)
    dWs, dbs = net.compute_gradient(values, backend.asarray(Y, dtype=net.dtype))
    got = [to_numpy(g) for pair in zip(dWs, dbs) for g in pair]
    want = numerical_gradient(net, X, Y)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)


@SETTINGS
@given(problem=problems(max_units=8), lr=st.floats(1e-3, 1e3), batch=st.one_of(st.none(), st.integers(1, 8)),
       dtype=st.sampled_from(["float32", "float64"]))
def test_fit_never_leaves_nan_weights_silently(backend, problem, lr, batch, dtype):
    sizes, acts, loss, X, Y, seed = problem
    net = make_net(backend, sizes, acts, loss=loss, seed=seed, dtype=dtype)
    try:
        net.fit(X * 50, Y, epochs=20, learning_rate=lr, batch_size=batch)
    except FloatingPointError:
        pass  # said so: and the weights must still be finite
    assert all(np.all(np.isfinite(W)) and np.all(np.isfinite(b)) for W, b in net.get_weights())
    assert all(math.isfinite(v) for v in net.history["loss"])


@SETTINGS
@given(problem=problems(max_units=8), dtype=st.sampled_from(["float32", "float64"]), data=st.data())
def test_predictions_do_not_depend_on_batch_order(backend, problem, dtype, data):
    sizes, acts, loss, X, _, seed = problem
    net = make_net(backend, sizes, acts, loss=loss, seed=seed, dtype=dtype)
    perm = np.array(data.draw(st.permutations(range(len(X)))), dtype=np.int64)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(net.predict(X[perm]), net.predict(X)[perm], rtol=rtol, atol=rtol)


@SETTINGS
@given(problem=problems(max_units=8), dtype=st.sampled_from(["float32", "float64"]))
def test_save_load_round_trips_are_exact(backend, problem, dtype, tmp_path_factory):
    import nn_xp

    sizes, acts, loss, X, Y, seed = problem
    net = make_net(backend, sizes, acts, loss=loss, seed=seed, dtype=dtype)
    net.fit(X, Y, epochs=2, optimizer="adam", learning_rate=0.01)
    path = tmp_path_factory.mktemp("models") / "net.safetensors"
    nn_xp.save(net, path)
    back = nn_xp.load(path, backend=backend.name, device=backend.device)
    assert back.layer_sizes == sizes and back.activations == acts and back.dtype_name == dtype
    for (W, b), (Wb, bb) in zip(net.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(W, Wb)
        np.testing.assert_array_equal(b, bb)
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    assert back.optimizer.iterations == net.optimizer.iterations
