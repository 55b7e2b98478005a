"""Dropout (issue 16, item 2): ``Network(dropout=...)`` on every backend and engine, full batch and
mini-batch; masks drawn on the device, counter-based (a function of the seed and the step), so runs are
reproducible and checkpoints resume bit for bit; the gradient with fixed masks against finite differences;
the masks' expectation (a property test); saved in model files; data-parallel fit equal to one process."""
from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
from helpers import assert_on_backend, in_threads, make_net
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nn_xp
from nn_xp import to_numpy
from nn_xp.engine import CudaGraphEngine

SIZES, ACTS = [3, 6, 5, 2], ["tanh", "sigmoid", "identity"]
REL = 1e-12
FIT = dict(epochs=4, learning_rate=0.3)  # one setting for most fits (and one DROP): JAX compiles once
DROP = (0.3, 0.5)


def data(m=29, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 3))
    return X, np.sin(X @ rng.standard_normal((3, 2)))


def weights(net):
    return np.concatenate([a.ravel() for pair in net.get_weights() for a in pair])


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ------------------------------------------------------------------ rates: what is accepted, what is refused
def test_one_rate_applies_to_every_hidden_layer_and_repr_shows_it():
    net = nn_xp.Network(SIZES, ACTS, backend="numpy", dropout=0.25)
    assert net.dropout == (0.25, 0.25) and net.dropout_seed is not None
    assert repr(net).endswith("dropout=0.25)")
    mixed = nn_xp.Network(SIZES, ACTS, backend="numpy", dropout=[0.5, 0])
    assert mixed.dropout == (0.5, 0.0) and repr(mixed).endswith("dropout=[0.5, 0.0])")
    none = nn_xp.Network(SIZES, ACTS, backend="numpy", dropout=[0, 0.0])
    assert none.dropout == (0.0, 0.0) and none.dropout_seed is None and "dropout" not in repr(none)


@pytest.mark.parametrize("dropout, match", [
    (-0.1, r"dropout must be a rate in \[0, 1\)"),
    (1.0, r"dropout must be a rate in \[0, 1\)"),
    (float("nan"), r"dropout must be a rate in \[0, 1\)"),
    (True, r"dropout must be a rate in \[0, 1\)"),
    ("0.2", r"dropout must be a rate in \[0, 1\)"),
    ([0.2, 1.5], r"dropout\[1\] must be a rate in \[0, 1\)"),
    ([0.2], r"one per hidden layer \(2\), got 1 rates"),
    ([0.2, 0.2, 0.2], r"got 3 rates .*the output layer takes no dropout"),
    (object(), r"a rate in \[0, 1\) or a sequence of them"),
])
def test_bad_rates_are_refused_naming_the_problem(dropout, match):
    with pytest.raises(ValueError, match=match):
        nn_xp.Network(SIZES, ACTS, backend="numpy", dropout=dropout)


def test_the_rates_may_change_between_fits():
    net = nn_xp.Network(SIZES, ACTS, backend="numpy")
    rng_state = net.rng.bit_generator.state
    net.dropout = 0.0
    assert net.dropout_seed is None and net.rng.bit_generator.state == rng_state  # nothing drawn
    net.dropout = [0.2, 0.4]
    seed = net.dropout_seed
    assert net.dropout == (0.2, 0.4) and seed is not None
    X, Y = data()
    net.fit(X, Y, epochs=2, batch_size=10)
    net.dropout = 0.0  # off: fit runs the trainer's own batch again
    assert "batch" not in vars(net.engine.trainer(net, nn_xp.SGD(), net.as_input(X)[0], net.as_target(Y)))
    net.dropout = 0.3
    assert net.dropout_seed == seed  # drawn once
    with pytest.raises(ValueError, match=r"dropout\[1\] must be a rate"):
        net.dropout = [0.1, -1]
    assert net.dropout == (0.3, 0.3)


def test_a_network_without_hidden_layers_takes_no_dropout():
    with pytest.raises(ValueError, match="no hidden layer: the output layer takes no dropout"):
        nn_xp.Network([3, 2], backend="numpy", dropout=0.3)
    assert nn_xp.Network([3, 2], backend="numpy", dropout=0.0).dropout == ()


def test_masks_are_checked_where_the_math_takes_them():
    net = nn_xp.Network(SIZES, ACTS, backend="numpy", dtype="float64", dropout=0.5)
    X = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"one dropout mask \(or None\) per hidden layer \(2\)"):
        net.evaluate(X, masks=[None])
    with pytest.raises(ValueError, match="masks drawn for another batch"):
        net.evaluate(X, masks=net.dropout_masks(5, 1))
    with pytest.raises(ValueError, match="has no dropout"):
        nn_xp.Network(SIZES, ACTS, backend="numpy").dropout_masks(4, 1)


def test_cuda_graph_refuses_dropout():
    net = nn_xp.Network(SIZES, ACTS, backend="numpy", dtype="float64", dropout=0.2)
    net.engine = CudaGraphEngine(net.backend, net.dtype, capture=lambda fn: fn)
    net.set_weights(net.get_weights())
    X, Y = data()
    with pytest.raises(ValueError, match="engine='cuda_graph' replays one captured epoch.*dropout"):
        net.fit(X, Y, epochs=2)


# ------------------------------------------------------------------ masks: on the device, counter-based
def test_masks_live_on_the_device_and_depend_on_the_seed_and_step_alone(backend):
    net = make_net(backend, SIZES, ACTS, dropout=[0.5, 0.0], seed=3)
    first = net.dropout_masks(40, 7)
    assert first[1] is None and first[0].shape == (40, 6)
    assert_on_backend(first[0], backend, "float64")
    net.dropout_masks(40, 8)  # draws in between change nothing
    again = net.dropout_masks(40, 7)
    np.testing.assert_array_equal(to_numpy(first[0]), to_numpy(again[0]))
    values = set(np.unique(to_numpy(first[0])))
    assert values == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - 0.5)
    assert not np.array_equal(to_numpy(net.dropout_masks(40, 8)[0]), to_numpy(first[0]))
    other = make_net(backend, SIZES, ACTS, dropout=[0.5, 0.0], seed=4)
    assert not np.array_equal(to_numpy(other.dropout_masks(40, 7)[0]), to_numpy(first[0]))


def test_the_layer_after_a_dropped_one_sees_its_kept_units_scaled(backend):
    """evaluate(X, masks=...) against the same forward pass written out on the host."""
    net = make_net(backend, SIZES, ACTS, dropout=[0.4, 0.7])
    X, _ = data(9)
    masks = net.dropout_masks(9, 1)
    values = net.evaluate(backend.asarray(X, dtype=net.dtype), masks=masks)
    (W0, b0), (W1, b1), (W2, b2) = net.get_weights()
    m0, m1 = (to_numpy(k) for k in masks)
    A1 = np.tanh(X @ W0.T + b0)
    A2 = 1.0 / (1.0 + np.exp(-((A1 * m0) @ W1.T + b1)))
    Z3 = (A2 * m1) @ W2.T + b2
    for (_, A), want in zip(values[1:], (A1, A2, Z3)):  # the values keep the undropped activations
        np.testing.assert_allclose(to_numpy(A), want, rtol=1e-12, atol=1e-14)


def test_the_gradient_with_fixed_masks_matches_finite_differences(backend):
    net = make_net(backend, SIZES, ACTS, dropout=[0.5, 0.3], seed=2)
    X, Y = data(7)
    Xd, Yd = backend.asarray(X, dtype=net.dtype), backend.asarray(Y, dtype=net.dtype)
    masks = net.dropout_masks(7, 5)
    assert 0 < float(np.mean(to_numpy(masks[0]) == 0)) < 1  # some units dropped, some kept

    def loss() -> float:
        z, a = net.evaluate(Xd, masks=masks)[-1]
        return float(net.loss_fn.value(z, a, Yd, net.xp))

    _, grads = net.value_and_gradient(net.evaluate(Xd, masks=masks), Yd, masks=masks)
    host, eps = net.get_weights(), 1e-6
    for k, (arr, grad) in enumerate(zip([a for pair in host for a in pair], grads)):
        want = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            net.set_weights(host)
            plus = loss()
            arr[idx] = old - eps
            net.set_weights(host)
            minus = loss()
            arr[idx] = old
            want[idx] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(to_numpy(grad), want, rtol=1e-5, atol=1e-8, err_msg=net.param_names[k])
    net.set_weights(host)


# the backend fixture only selects a namespace: reusing it across examples is safe
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rate=st.floats(0.05, 0.8), seed=st.integers(0, 2**32), step=st.integers(1, 2**31))
def test_masked_activations_average_to_the_activations(backend, rate, seed, step):
    """Inverted scaling: over many draws, what the next layer sees averages to the undropped A."""
    net = make_net(backend, [2, 4, 1], ["sigmoid", "identity"], dropout=rate, seed=seed)
    rows, tiles, steps = 3, 2500, 2  # each (row, unit) drawn tiles * steps times
    X = np.random.default_rng(seed).standard_normal((rows, 2))
    A = to_numpy(net.evaluate(backend.asarray(X, dtype=net.dtype))[1][1])  # (rows, 4)
    total = np.zeros_like(A)
    for s in range(step, step + steps):
        mask = to_numpy(net.dropout_masks(rows * tiles, s)[0]).reshape(tiles, rows, 4)
        total += (A * mask).sum(axis=0)
    mean = total / (tiles * steps)
    sigma = np.sqrt(rate / (1 - rate) / (tiles * steps))  # the standard deviation of the mean mask
    np.testing.assert_array_less(np.abs(mean - A), 6 * sigma * A + 1e-12)


def test_numpy_draws_are_philox_keyed_by_the_seed_with_the_step_as_counter():
    from nn_xp import _random

    draw = _random.uniform_source(nn_xp.resolve_backend("numpy").xp, None)
    for seed, step in ((5, 1), (2**63 + 9, 2**40), (0, 0)):
        got = draw(seed, step, [(3, 4), (2,)])
        want = np.random.Generator(np.random.Philox(key=seed, counter=step << 128))
        np.testing.assert_array_equal(got[0], want.random((3, 4), dtype=np.float32))
        np.testing.assert_array_equal(got[1], want.random(2, dtype=np.float32))


def test_cupy_draws_are_curand_philox_seeded_per_step(monkeypatch):
    """The CuPy delegation against a stand-in (CuPy itself needs a GPU): one Philox generator, reseeded with a
    uint64 per step (CuPy casts seeds 'safe'ly), float32 draws on the current device."""
    from nn_xp import _random

    calls = []

    class RandomState:
        def __init__(self, method):
            calls.append(("method", method))

        def seed(self, seed):
            assert isinstance(seed, np.uint64)
            calls.append(("seed", int(seed)))
            self.stream = np.random.default_rng(int(seed))

        def random_sample(self, shape, dtype):
            return self.stream.random(shape, dtype=dtype)

    class Device:
        def __enter__(self):
            calls.append(("device",))

        def __exit__(self, *exc):
            return False

    curand = types.SimpleNamespace(CURAND_RNG_PSEUDO_PHILOX4_32_10=7)
    cuda = types.SimpleNamespace(Device=Device, curand=curand)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        random=types.SimpleNamespace(RandomState=RandomState), cuda=cuda, float32=np.float32))
    draw = _random.uniform_source(types.ModuleType("array_api_compat.cupy"), None)
    a, b = draw(5, 3, [(2, 4), (2, 1)])
    assert calls[:2] == [("device",), ("method", 7)] and a.dtype == np.float32 and b.shape == (2, 1)
    again, other = draw(5, 3, [(2, 4)])[0], draw(5, 4, [(2, 4)])[0]
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, other)
    assert [c[1] for c in calls if c[0] == "seed"] == [_random.splitmix64(5, s) for s in (3, 3, 4)]


# ------------------------------------------------------------------ training: rate 0, predict, seeds, engines
@pytest.mark.parametrize("batch_size", [None, 7])
def test_rate_0_trains_bit_identically_to_no_dropout_and_a_rate_does_not(backend, batch_size):
    X, Y = data()
    plain = make_net(backend, SIZES, ACTS)
    zero = make_net(backend, SIZES, ACTS, dropout=[0.0, 0])
    h1 = plain.fit(X, Y, batch_size=batch_size, **FIT)
    h2 = zero.fit(X, Y, batch_size=batch_size, **FIT)
    assert weights(plain).tobytes() == weights(zero).tobytes() and h1.history == h2.history
    trainer = zero.engine.trainer(zero, nn_xp.SGD(), zero.as_input(X)[0], zero.as_target(Y))
    assert "batch" not in vars(trainer)  # no dropout: the trainer's own batch, as before
    dropped = make_net(backend, SIZES, ACTS, dropout=DROP)
    dropped.fit(X, Y, batch_size=batch_size, **FIT)
    assert rel(weights(dropped), weights(plain)) > 1e-6


def test_dropout_is_active_in_fit_alone(backend):
    X, Y = data()
    plain = make_net(backend, SIZES, ACTS, seed=5)
    dropped = make_net(backend, SIZES, ACTS, seed=5, dropout=DROP)
    assert weights(plain).tobytes() == weights(dropped).tobytes()  # the seed is drawn after the weights
    for method in ("predict", "predict_classes"):
        np.testing.assert_array_equal(getattr(plain, method)(X), getattr(dropped, method)(X))
    assert plain.loss(X, Y) == dropped.loss(X, Y) and plain.score(X, Y) == dropped.score(X, Y)
    start, Xv, Yv = plain.loss(X, Y), *data(11, seed=2)
    history = dropped.fit(X, Y, validation_data=(Xv, Yv), **FIT)  # full batch: loss[0] at the start weights
    assert history.history["loss"][0] != pytest.approx(start, rel=1e-3)  # the dropped network's loss
    assert history.history["val_loss"][-1] == pytest.approx(dropped.loss(Xv, Yv), rel=1e-12)  # the whole's
    plain.set_weights(dropped.get_weights())
    np.testing.assert_array_equal(plain.predict(X), dropped.predict(X))


@pytest.mark.parametrize("batch_size", [None, 7])
def test_a_run_is_reproducible_for_a_seed(backend, batch_size):
    X, Y = data()
    runs = []
    for seed in (11, 11, 12):
        net = make_net(backend, SIZES, ACTS, seed=seed, dropout=DROP)
        history = net.fit(X, Y, batch_size=batch_size, **FIT)
        runs.append((weights(net), history.history))
    assert runs[0][0].tobytes() == runs[1][0].tobytes() and runs[0][1] == runs[1][1]
    assert rel(runs[0][0], runs[2][0]) > 1e-6


@pytest.mark.parametrize("batch_size", [None, 7])
def test_every_engine_draws_the_same_masks(backend, batch_size):
    """The portable engine against the buffered one (with and without reused buffers) on NumPy, the compiled
    one on JAX; NumPy's draws moved to array-api-strict's device are NumPy's."""
    X, Y = data()
    nets = {}
    names = {"numpy": ["portable", "buffered", "workspace"], "jax": ["portable", "compiled"]}.get(
        backend.name, ["auto"])
    for name in names:
        net = make_net(backend, SIZES, ACTS, engine="buffered" if name == "workspace" else name, dropout=DROP)
        if name == "workspace":
            net.engine.workspace_min_elements = 0  # every Z and A into kept buffers, spent by backward
        net.fit(X, Y, batch_size=batch_size, **FIT)
        nets[name] = weights(net)
    if backend.name == "array_api_strict":
        ref = nn_xp.Network(SIZES, ACTS, backend="numpy", dtype="float64", engine="portable", dropout=DROP)
        ref.fit(X, Y, batch_size=batch_size, **FIT)
        nets["numpy"] = weights(ref)
    first = next(iter(nets.values()))
    for name, w in nets.items():
        assert rel(w, first) < REL, name


def test_dropout_rides_with_sample_weights_metrics_and_penalties(backend):
    """The other options of issue 16 beside dropout, on the engines that run them (the masks the same)."""
    X, Y = data()
    w = np.random.default_rng(3).uniform(0.5, 2.0, X.shape[0])
    names = {"numpy": ["portable", "buffered"], "jax": ["portable", "compiled"]}.get(backend.name, ["auto"])
    runs = []
    for name in names:
        net = make_net(backend, SIZES, ACTS, engine=name, dropout=DROP, l2=0.01)
        history = net.fit(X, Y, batch_size=7, sample_weight=w, metrics=["mae"], **FIT)
        runs.append((weights(net), history.history["mae"]))
    plain = make_net(backend, SIZES, ACTS, l2=0.01)
    plain.fit(X, Y, batch_size=7, sample_weight=w, metrics=["mae"], **FIT)
    for got, mae in runs:
        assert rel(got, runs[0][0]) < REL and rel(np.array(mae), np.array(runs[0][1])) < REL
    assert rel(runs[0][0], weights(plain)) > 1e-6


# ------------------------------------------------------------------ state: checkpoints, model files, to()
def test_checkpoint_resume_is_bit_identical_in_mini_batch(backend, tmp_path):
    X, Y = data()
    path = tmp_path / "ck.safetensors"
    whole = make_net(backend, SIZES, ACTS, dropout=DROP, seed=7)
    full = whole.fit(X, Y, batch_size=7, **FIT)
    first = make_net(backend, SIZES, ACTS, dropout=DROP, seed=7)
    first.fit(X, Y, batch_size=7, checkpoint=path, **{**FIT, "epochs": 2})
    resumed = make_net(backend, SIZES, ACTS, dropout=DROP, seed=99)  # another seed: the file's counts
    history = resumed.fit(X, Y, batch_size=7, resume_from=path, **FIT)
    assert resumed.dropout_seed == whole.dropout_seed
    assert weights(resumed).tobytes() == weights(whole).tobytes() and history.history == full.history


def test_an_interrupted_epoch_rolls_back_and_draws_the_same_masks_again(backend):
    """Ctrl-C inside an epoch restores the undo point (weights, optimizer, shuffle): masks need no state."""
    X, Y = data()
    whole = make_net(backend, SIZES, ACTS, dropout=DROP)
    whole.fit(X, Y, batch_size=7, **FIT)
    net = make_net(backend, SIZES, ACTS, dropout=DROP)
    raised = []

    def rate(step):
        if step == 7 and not raised:  # in the second epoch (5 batches each)
            raised.append(step)
            raise KeyboardInterrupt
        return FIT["learning_rate"]

    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, batch_size=7, epochs=FIT["epochs"], learning_rate=rate)
    done = len(net.history.history["loss"])
    assert done < 2 and (done == 0 or net.optimizer.iterations == 5 * done)  # JAX: one call, none done
    net.fit(X, Y, batch_size=7, epochs=FIT["epochs"] - done, learning_rate=FIT["learning_rate"])
    assert weights(net).tobytes() == weights(whole).tobytes()


def test_a_checkpoint_needs_the_same_rates(tmp_path):
    X, Y = data()
    path = tmp_path / "ck.safetensors"
    nn_xp.Network(SIZES, ACTS, backend="numpy", dropout=0.3).fit(X, Y, epochs=2, checkpoint=path)
    for other, said in ((0.5, r"dropout \[0.3, 0.3\]; this network has dropout \[0.5, 0.5\]"),
                        (0.0, r"dropout \[0.3, 0.3\]; this network has no dropout")):
        net = nn_xp.Network(SIZES, ACTS, backend="numpy", dropout=other)
        before = weights(net)
        with pytest.raises(nn_xp.ModelFileError, match=said):
            net.fit(X, Y, epochs=4, resume_from=path)
        assert weights(net).tobytes() == before.tobytes()


def test_model_files_keep_the_rates_and_old_files_load_without(backend, tmp_path):
    net = nn_xp.Network(SIZES, ACTS, backend="numpy", dtype="float64", dropout=[0.25, 0.0])
    nn_xp.save(net, tmp_path / "d.safetensors")
    loaded = nn_xp.load(tmp_path / "d.safetensors", backend=backend.name, device=backend.device)
    assert loaded.dropout == (0.25, 0.0) and loaded.dropout_seed is not None
    np.testing.assert_allclose(loaded.predict(data()[0]), net.predict(data()[0]), rtol=1e-12, atol=1e-15)
    plain = nn_xp.Network(SIZES, ACTS, backend="numpy", dtype="float64")
    nn_xp.save(plain, tmp_path / "p.safetensors")  # a file as before: no dropout key
    old = nn_xp.load(tmp_path / "p.safetensors", backend=backend.name, device=backend.device)
    assert old.dropout == (0.0, 0.0) and old.dropout_seed is None


@pytest.mark.parametrize("bad", [[0.5], [0.5, 1.0], "0.5", [True, 0.0]])
def test_a_model_file_with_bad_rates_is_refused(tmp_path, monkeypatch, bad):
    from nn_xp import _payload

    real = _payload.payload

    def tampered(net):
        tensors, meta = real(net)
        meta["dropout"] = bad
        return tensors, meta

    monkeypatch.setattr("nn_xp.io.payload", tampered)
    path = tmp_path / "bad.safetensors"
    nn_xp.save(nn_xp.Network(SIZES, ACTS, backend="numpy"), path)
    with pytest.raises(nn_xp.ModelFileError, match="has invalid dropout"):
        nn_xp.load(path, backend="numpy")


def test_to_keeps_the_dropout(backend):
    net = nn_xp.Network(SIZES, ACTS, backend="numpy", dtype="float64", dropout=DROP)
    seed = net.dropout_seed
    net.to(backend.name, backend.device)
    assert net.dropout == DROP and net.dropout_seed == seed
    net.fit(*data(), batch_size=7, **FIT)


def test_a_pickled_network_keeps_its_rates_and_seed():
    net = nn_xp.Network(SIZES, ACTS, backend="numpy", dtype="float64", dropout=DROP)
    copy = pickle.loads(pickle.dumps(net))
    assert copy.dropout == DROP and copy.dropout_seed == net.dropout_seed
    X, Y = data()
    assert net.fit(X, Y, batch_size=7, **FIT).history == copy.fit(X, Y, batch_size=7, **FIT).history


# ------------------------------------------------------------------ data-parallel: one process's training
def ranks(size, work, timeout=30.0):
    """``work(comm)`` on ``size`` threads of one LocalCommunicator group: the results; raises the first
    error a rank raised."""
    results, errors = in_threads(size, work, timeout)
    for exc in errors:
        if exc is not None:
            raise exc
    return results


@pytest.mark.parametrize("batch_size, size", [(None, 2), (7, 3), (2, 3)])  # (2, 3): some shards are empty
def test_data_parallel_training_is_one_processs(backend, batch_size, size):
    if backend.name == "jax":
        pytest.skip("no data-parallel JAX (fit(comm=) refuses it: test_distributed)")
    X, Y = data()

    def train(comm, seed=5):
        net = make_net(backend, SIZES, ACTS, dropout=DROP, seed=seed)
        history = net.fit(X, Y, batch_size=batch_size, comm=comm, **FIT)
        return weights(net), history.history

    ref_w, ref_h = train(None)
    # every rank's own seed differs: rank 0's dropout seed (with its weights and shuffle) reaches the others
    results = ranks(size, lambda comm: train(comm, seed=5 if comm.rank == 0 else 100 + comm.rank))
    for w, h in results:
        assert w.tobytes() == results[0][0].tobytes() and h == results[0][1]
    assert rel(results[0][0], ref_w) < REL
    for key in ref_h:
        assert rel(np.array(results[0][1][key]), np.array(ref_h[key])) < REL, key


def test_data_parallel_ranks_must_agree_on_the_rates():
    X, Y = data()

    def train(comm):
        net = nn_xp.Network(SIZES, ACTS, backend="numpy", dropout=0.2 if comm.rank == 0 else 0.4)
        net.fit(X, Y, epochs=1, comm=comm)

    with pytest.raises(ValueError, match="dropout: rank 0 has"):
        ranks(2, train)
