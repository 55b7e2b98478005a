"""The jax backend and its compiled engine: devices, float64 only in x64 mode, the same numbers as NumPy,
several epochs per compiled call equal to one at a time, undo points, Ctrl-C, schedules, compilation kept."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import SINE_X, SINE_Y, assert_on_backend

import nn_xp
from nn_xp.backends import BackendUnavailableError, resolve_backend
from nn_xp.engine import CompiledEngine, CompiledTrainer, ImmutableParameters
from nn_xp.engine import compiled as compiled_module

jax = pytest.importorskip("jax")

X3 = np.random.default_rng(0).standard_normal((24, 3))
Y3 = np.stack([np.sin(X3[:, 0]), X3[:, 1] * X3[:, 2]], axis=1)


def _pair(sizes, activations, **kwargs):
    """The same network (same seed) on NumPy and on jax, float64."""
    kwargs.setdefault("dtype", "float64")
    return [nn_xp.Network(sizes, activations, backend=name, seed=3, **kwargs) for name in ("numpy", "jax")]


def _assert_weights(net, ref, rtol, atol=0.0):
    for (W, b), (Wr, br) in zip(net.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(W, Wr, rtol=rtol, atol=atol)
        np.testing.assert_allclose(b, br, rtol=rtol, atol=atol)


@pytest.fixture
def calls(monkeypatch):
    """The epochs of every compiled call, in order."""
    seen = []
    call = CompiledTrainer.call

    def counted(self, epochs):
        seen.append(epochs)
        return call(self, epochs)

    monkeypatch.setattr(CompiledTrainer, "call", counted)
    return seen


@pytest.fixture
def chunk(monkeypatch):
    """Set the epochs per compiled call: ``chunk(4)``."""
    def set_chunk(n):
        monkeypatch.setattr(compiled_module, "epochs_per_call", lambda *args: n)
    return set_chunk


# ------------------------------------------------------------------ the backend
def test_jax_is_a_backend_with_jax_devices(monkeypatch):
    backend = resolve_backend("jax")
    assert backend.name == "jax" and backend.xp is jax.numpy and backend.device == jax.devices()[0]
    assert resolve_backend("jax", "cpu").device == jax.devices("cpu")[0]
    assert resolve_backend("jax", "cpu:0").device == resolve_backend("jax", 0).device == jax.devices("cpu")[0]
    assert resolve_backend("jax", jax.devices()[0]).device is jax.devices()[0]
    monkeypatch.setenv("NN_XP_BACKEND", "jax")
    monkeypatch.setenv("NN_XP_DEVICE", "cpu")
    net = nn_xp.Network([1, 3, 1])
    assert net.backend.name == "jax" and net.device == jax.devices("cpu")[0]
    assert_on_backend(net.parameters[0], net.backend, "float32")
    report = nn_xp.available_backends()
    assert report["jax"]["usable"] and report["jax"]["devices"][0] == str(jax.devices()[0])
    assert report["auto"]["picks"] in ("numpy", "cupy")  # auto never picks jax


def test_python_m_nn_xp_lists_jax():
    out = subprocess.run([sys.executable, "-m", "nn_xp"], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("jax "))
    assert jax.__version__ in line and str(jax.devices()[0]) in line


@pytest.mark.parametrize("device", ["cuda:7", "tpu", 99, "cpu:3"])
def test_a_jax_device_that_is_not_there_is_a_clear_error(device):
    with pytest.raises(BackendUnavailableError, match=f"device {device!r}.*jax sees cpu:0"):
        resolve_backend("jax", device)
    with pytest.raises(ValueError, match="jax device must be"):
        resolve_backend("jax", "cpu:first")


def _without_x64(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NN_XP_BACKEND"} | {"JAX_ENABLE_X64": "0"}
    return subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


def test_float64_without_x64_is_a_clear_error_and_float32_runs_without_a_warning():
    code = """
import json, numpy as np, nn_xp
try:
    nn_xp.Network([2, 3, 1], backend="jax", dtype="float64")
    error = None
except ValueError as exc:
    error = str(exc)
X = np.random.default_rng(0).standard_normal((30, 2))
net = nn_xp.Network([2, 4, 3], backend="jax", loss="cross_entropy")
history = net.fit(X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0), epochs=3, batch_size=8)
labels = net.predict_classes(X)
print(json.dumps({"error": error, "dtype": str(net.parameters[0].dtype), "labels": str(labels.dtype),
                  "epochs": len(history)}))
"""
    done = _without_x64(code)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "JAX_ENABLE_X64=1" in result["error"] and "dtype='float64'" in result["error"]
    assert result["dtype"] == "float32" and result["epochs"] == 3 and result["labels"].startswith("int")


def test_the_engine_is_compiled_on_jax_and_portable_still_runs_eagerly():
    assert "compiled" in nn_xp.ENGINES
    net = nn_xp.Network([1, 4, 1], backend="jax", dtype="float64")
    assert isinstance(net.engine, CompiledEngine) and isinstance(net.parameters, ImmutableParameters)
    eager = nn_xp.Network([1, 4, 1], backend="jax", dtype="float64", engine="portable")
    assert eager.engine.name == "portable"
    net.fit(SINE_X, SINE_Y, epochs=3)
    eager.fit(SINE_X, SINE_Y, epochs=3)
    _assert_weights(net, eager, rtol=1e-12)
    with pytest.raises(ValueError, match="engine='compiled' compiles with JAX.*numpy"):
        nn_xp.Network([1, 4, 1], backend="numpy", engine="compiled")
    with pytest.raises(ValueError, match="engine='buffered' writes into out= buffers.*jax"):
        nn_xp.Network([1, 4, 1], backend="jax", engine="buffered")


# ------------------------------------------------------------------ the same numbers as NumPy
def test_the_blog_sine_numbers_in_float64_in_few_calls(calls):
    from test_core import blog_weights

    net = nn_xp.Network([1, 20, 1], ["sigmoid", "identity"], backend="jax", dtype="float64")
    net.set_weights(blog_weights())
    history = net.fit(SINE_X, SINE_Y, epochs=2000, learning_rate=0.1)
    assert net.loss(SINE_X, SINE_Y) == pytest.approx(0.0130985534, rel=1e-8)
    assert len(history) == 2000 and len(calls) <= 2
    net.fit(SINE_X, SINE_Y, epochs=18000)
    assert net.loss(SINE_X, SINE_Y) == pytest.approx(0.0048015388, rel=1e-8)


OPTIMIZERS = {"sgd": lambda: nn_xp.SGD(0.05), "momentum": lambda: nn_xp.SGD(0.05, momentum=0.9),
              "nesterov": lambda: nn_xp.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
              "adam": lambda: nn_xp.Adam(0.01), "adamw": lambda: nn_xp.AdamW(0.01, weight_decay=0.1)}


@pytest.mark.parametrize("batch_size", [None, 5], ids=["full-batch", "mini-batch"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_the_same_weights_and_history_as_numpy_from_one_seed(optimizer, batch_size):
    ref, net = _pair([3, 6, 2], ["tanh", "identity"])
    histories = [n.fit(X3, Y3, epochs=12, batch_size=batch_size, optimizer=OPTIMIZERS[optimizer]())
                 for n in (ref, net)]
    np.testing.assert_allclose(histories[1]["loss"], histories[0]["loss"], rtol=1e-10)
    _assert_weights(net, ref, rtol=1e-10, atol=1e-14)
    assert net.optimizer.iterations == ref.optimizer.iterations == 12 * (1 if batch_size is None else 5)
    state, ref_state = net.optimizer.state_dict(), ref.optimizer.state_dict()
    assert state.keys() == ref_state.keys() and state["state"].keys() == ref_state["state"].keys()
    for name, slots in ref_state["state"].items():
        for slot, value in slots.items():
            np.testing.assert_allclose(state["state"][name][slot], value, rtol=1e-9, atol=1e-14)
    assert ref.rng.random() == net.rng.random()  # the same shuffles were drawn


@pytest.mark.parametrize("loss, out", [("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")])
def test_classification_validation_and_a_schedule_as_numpy(loss, out):
    Y = np.argmax(X3, axis=1) if loss == "cross_entropy" else (X3[:, :3] > 0).astype(float)
    ref, net = _pair([3, 5, 3], ["relu", out], loss=loss)
    for n in (ref, net):
        n.fit(X3, Y, epochs=7, batch_size=7, validation_split=0.25,
              optimizer=nn_xp.Adam(nn_xp.ExponentialDecay(0.05, rate=0.5, decay_steps=4)))
    assert set(net.history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key, values in ref.history.history.items():
        np.testing.assert_allclose(net.history[key], values, rtol=1e-10, err_msg=key)
    _assert_weights(net, ref, rtol=1e-10, atol=1e-14)


def test_the_step_count_is_never_frozen_into_a_trace():
    """Adam's bias correction reads the traced step: one compiled function gives each step its own."""
    opt, xp = nn_xp.Adam(0.1), jax.numpy
    params, grads = {"W0": xp.ones(3)}, {"W0": xp.asarray([1.0, -2.0, 0.5])}
    step = jax.jit(lambda p, g, s, t, lr: opt.apply(p, g, s, t, lr, xp))
    state = opt.state_for(params)
    eager = nn_xp.Adam(0.1)
    eager_params = [np.ones(3)]
    for t in (1, 2, 3):
        params, state = step(params, grads, state, float(t), 0.1)
        eager.step(eager_params, [np.array(grads["W0"])], ["W0"])
        np.testing.assert_allclose(np.asarray(params["W0"]), eager_params[0], rtol=1e-12)
    assert opt.iterations == 0  # apply counts nothing on the host: the caller does


def test_apply_is_pure_on_a_library_that_writes_in_place():
    import array_api_compat.numpy as xp

    opt, p, g = nn_xp.SGD(0.5, momentum=0.9), np.ones(2), np.ones(2)
    state = opt.state_for({"W0": p})
    new, new_state = opt.apply({"W0": p}, {"W0": g}, state, 1, 0.5, xp)
    assert p.tolist() == g.tolist() == [1.0, 1.0] and state["W0"]["velocity"].tolist() == [0.0, 0.0]
    assert new["W0"].tolist() == [0.5, 0.5] and new_state["W0"]["velocity"].tolist() == [1.0, 1.0]


# ------------------------------------------------------------------ several epochs per call
@pytest.mark.parametrize("batch_size", [None, 7], ids=["full-batch", "mini-batch"])
def test_several_epochs_per_call_equal_one_at_a_time_exactly(batch_size, calls):
    nets = [nn_xp.Network([3, 6, 2], ["tanh", "identity"], backend="jax", dtype="float64", seed=4)
            for _ in range(2)]
    nets[0].fit(X3, Y3, epochs=40, batch_size=batch_size, optimizer="adam")
    chunked = len(calls)
    nets[1].fit(X3, Y3, epochs=40, batch_size=batch_size, optimizer="adam", callbacks=lambda e, logs: None)
    assert chunked == 1 and calls[chunked:] == [1] * 40  # a callback reads the host after every epoch
    assert nets[0].history.history == nets[1].history.history
    for (W, b), (W1, b1) in zip(nets[0].get_weights(), nets[1].get_weights()):
        np.testing.assert_array_equal(W, W1)
        np.testing.assert_array_equal(b, b1)
    assert nets[0].optimizer.state_dict()["iterations"] == nets[1].optimizer.state_dict()["iterations"]
    assert nets[0].rng.random() == nets[1].rng.random()


def test_a_progress_bar_and_checkpoints_bound_the_call(calls, chunk, tmp_path, capsys):
    chunk(8)
    net = nn_xp.Network([3, 4, 2], backend="jax", dtype="float64")
    net.fit(X3, Y3, epochs=20, checkpoint=tmp_path / "ck.safetensors", checkpoint_every=6)
    assert calls == [6, 6, 6, 2]  # never past a checkpoint
    fresh = nn_xp.Network([3, 4, 2], dtype="float64")
    epoch, history = nn_xp.load_checkpoint(tmp_path / "ck.safetensors", fresh, None)
    assert epoch == 20 and len(history) == 20
    del calls[:]
    net.fit(X3, Y3, epochs=3, verbose=2)
    assert calls == [1, 1, 1] and capsys.readouterr().err.count("epoch ") == 3


def test_compilation_is_kept_per_shape_and_reported_when_verbose(capsys):
    sizes = [3, 7, 2]  # a shape no other test compiles
    net = nn_xp.Network(sizes, backend="jax", dtype="float64")
    net.fit(X3, Y3, epochs=2, verbose=2)
    first = capsys.readouterr().err
    assert first.count("nn_xp: compiled") == 1 and "full batch, SGD" in first
    kept = CompiledEngine.compiled_programs()
    nn_xp.Network(sizes, backend="jax", dtype="float64", seed=9).fit(X3, Y3, epochs=5, verbose=2)
    assert "compiled" not in capsys.readouterr().err and CompiledEngine.compiled_programs() == kept
    net.fit(X3, Y3, epochs=2, batch_size=5, verbose=2)
    assert capsys.readouterr().err.count("nn_xp: compiled") == 1


# ------------------------------------------------------------------ undo points, divergence, Ctrl-C
def test_undo_points_are_references_and_restore_rebinds():
    net = nn_xp.Network([2, 5, 1], backend="jax", dtype="float64", seed=3)
    held = list(net.parameters)
    saved = net.snapshot()
    assert all(a is p for a, p in zip(saved.arrays, held)) and not saved.writeable
    net.fit(X3[:, :2], Y3[:, :1], epochs=3)
    assert not any(a is p for a, p in zip(net.parameters, held))
    assert bool(net.parameters.all_finite())
    net.restore(saved)
    assert all(p is a for p, a in zip(net.parameters, held)) and net.params["W0"] is held[0]
    with pytest.raises(ValueError, match="snapshot of another network"):
        net.restore(nn_xp.Network([2, 4, 1], backend="jax").snapshot())


def test_a_divergence_inside_a_call_rolls_back_to_the_last_epoch_with_a_finite_loss(chunk, calls):
    """The call's start, then the epochs from there to that one compiled again: as one epoch a call."""
    nets = []
    for per_call in (5, 1):
        chunk(per_call)
        net = nn_xp.Network([1, 16, 1], ["relu", "identity"], backend="jax", dtype="float64", seed=1)
        with pytest.raises(FloatingPointError, match="non-finite"):
            net.fit(SINE_X * 100, SINE_Y * 100, epochs=200, learning_rate=5.0)
        nets.append(net)
    net, reference = nets
    assert 0 < len(net.history) < 5 and calls[:2] == [5, len(net.history)]  # the call, then its replay
    assert net.history.history == reference.history.history
    _assert_weights(net, reference, rtol=0)
    assert net.history.epoch == list(range(len(net.history)))
    assert all(np.all(np.isfinite(W)) and np.all(np.isfinite(b)) for W, b in net.get_weights())
    assert math.isfinite(net.loss(SINE_X * 100, SINE_Y * 100))
    assert net.optimizer.iterations == len(net.history)


@pytest.mark.parametrize("batch_size", [None, 5], ids=["full-batch", "mini-batch"])
def test_ctrl_c_during_a_call_leaves_the_last_whole_call(batch_size, chunk, monkeypatch):
    chunk(3)
    call = CompiledTrainer.call
    count = []

    def interrupted(self, epochs):
        rows = call(self, epochs)  # the call ran and its results are in: the loop has not recorded them
        count.append(epochs)
        if len(count) == 2:
            raise KeyboardInterrupt
        return rows

    monkeypatch.setattr(CompiledTrainer, "call", interrupted)
    net = nn_xp.Network([3, 6, 2], ["tanh", "identity"], backend="jax", dtype="float64", seed=1)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X3, Y3, epochs=9, batch_size=batch_size, optimizer=nn_xp.Adam(0.01))
    assert len(net.history) == 3 and net.optimizer.iterations == 3 * (1 if batch_size is None else 5)
    monkeypatch.setattr(CompiledTrainer, "call", call)
    reference = nn_xp.Network([3, 6, 2], ["tanh", "identity"], backend="jax", dtype="float64", seed=1)
    reference.fit(X3, Y3, epochs=3, batch_size=batch_size, optimizer=nn_xp.Adam(0.01))
    _assert_weights(net, reference, rtol=0)
    assert net.rng.random() == reference.rng.random()  # the interrupted call's shuffles were undone too
    net.fit(X3, Y3, epochs=6, batch_size=batch_size)  # continues as if never interrupted
    reference.fit(X3, Y3, epochs=6, batch_size=batch_size)
    _assert_weights(net, reference, rtol=0)


def test_a_schedule_refusing_a_later_step_trains_the_epochs_before_it():
    def schedule(step):
        return 0.05 if step < 10 else math.nan

    results = []
    for name in ("numpy", "jax"):
        net = nn_xp.Network([3, 4, 2], backend=name, dtype="float64", seed=2)
        with pytest.raises(ValueError, match="gave nan for step 10"):
            net.fit(X3, Y3, epochs=30, optimizer=nn_xp.SGD(schedule))
        results.append(net)
    assert len(results[1].history) == len(results[0].history) == 10
    _assert_weights(results[1], results[0], rtol=1e-10)


# ------------------------------------------------------------------ the rest of the library on jax
def test_a_pure_gradient_hook_is_traced_into_the_step():
    def double(grads):
        for i, g in enumerate(grads):
            grads[i] = g * 2.0  # immutable arrays: the hook replaces the list's items

    net = nn_xp.Network([2, 5, 1], ["tanh", "identity"], backend="jax", dtype="float64", seed=1)
    X, Y = net.backend.asarray(X3[:, :2], dtype=net.dtype), net.backend.asarray(Y3[:, :1], dtype=net.dtype)
    rows = net.engine.trainer(net, nn_xp.SGD(0.05), X, Y, gradient_hook=double).run(3)
    assert rows.shape == (3, 1)
    assert_on_backend(rows[0][0], net.backend, "float64")
    reference = nn_xp.Network([2, 5, 1], ["tanh", "identity"], backend="jax", dtype="float64", seed=1)
    reference.fit(X, Y, epochs=3, learning_rate=0.1)
    _assert_weights(net, reference, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("other", ["numpy", "torch", "array_api_strict"])
def test_to_and_from_every_backend_mid_training(other):
    pytest.importorskip(other)
    net, ref = (nn_xp.Network([3, 5, 2], backend="jax", dtype="float64", seed=5) for _ in range(2))
    net.fit(X3, Y3, epochs=4, batch_size=6, optimizer="adam")
    net.to(other)
    net.fit(X3, Y3, epochs=4, batch_size=6)  # 4 more, the optimizer's state and the shuffles carried on
    net.to("jax")
    assert net.engine.name == "compiled"
    net.fit(X3, Y3, epochs=4, batch_size=6)
    ref.fit(X3, Y3, epochs=12, batch_size=6, optimizer="adam")
    _assert_weights(net, ref, rtol=1e-9, atol=1e-13)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_save_load_and_the_scikit_learn_estimator(tmp_path):
    net = nn_xp.Network([3, 5, 2], backend="jax", dtype="float64", seed=5)
    net.fit(X3, Y3, epochs=5, optimizer="adam")
    nn_xp.save(net, tmp_path / "net.safetensors")
    loaded = nn_xp.load(tmp_path / "net.safetensors", backend="jax")
    np.testing.assert_array_equal(loaded.predict(X3), net.predict(X3))
    from nn_xp.sklearn import MLPRegressor

    model = MLPRegressor(hidden_layer_sizes=(6,), max_iter=30, backend="jax", random_state=0).fit(X3, Y3)
    assert isinstance(model.predict(X3), np.ndarray) and model.network_.engine.name == "compiled"


def test_a_snapshot_from_another_backend_restores_onto_the_jax_device():
    net = nn_xp.Network([2, 3, 1], backend="jax", dtype="float64", seed=1)
    host = nn_xp.Network([2, 3, 1], backend="numpy", dtype="float64", seed=2, engine="portable")
    net.restore(host.snapshot())
    assert all(type(p) is type(net.parameters[0]) and p.device == net.device for p in net.parameters)
    _assert_weights(net, host, rtol=0)


def test_a_large_networks_calls_run_enough_epochs_to_share_out_their_fixed_cost():
    """XLA's CPU runtime touches a call's temporary buffers afresh: on 784-1024-1024-10 with 8192 rows that is
    an eighth of an epoch per call, so one epoch per call was 1.12 x a hand-written two-epoch scan. Calls are
    as long as the fixed cost's share asks (two epochs there), no longer than the cautious cap."""
    def chunk(sizes, m, steps=1, rows=None, itemsize=4):
        layers = nn_xp.Network(sizes, backend="numpy").layers
        return compiled_module.epochs_per_call(layers, m, steps, rows or m, itemsize)

    assert chunk([784, 1024, 1024, 10], 8192) == 2
    assert chunk([64, 256, 256, 10], 4096) == 16  # the fixed cost asks more than the quarter second's 8
    assert chunk([1, 20, 1], 100) == compiled_module.MAX_CHUNK
    huge = chunk([4096, 8192, 8192, 10], 65536)  # a cautious estimate of 40 s an epoch: one per call
    assert huge == 1
    for sizes, m in (([64, 64, 64, 10], 4096), ([784, 1024, 1024, 10], 8192), ([3, 5, 2], 10)):
        n = chunk(sizes, m)
        assert n & (n - 1) == 0  # a power of two: one program serves every call of a fit
        layers = nn_xp.Network(sizes, backend="numpy").layers
        slow = compiled_module.STEP_SECONDS + 6.0 * m * sum(a.n_in * a.n_out for a in layers) \
            * compiled_module.FLOP_SECONDS
        assert n == 1 or n * slow <= compiled_module.MAX_CALL_SECONDS  # Ctrl-C's wait stays bounded
