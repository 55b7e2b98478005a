"""What users reach for in the first hour (issue 16, items 7, 9-14): summary(), pickling, dtype objects,
``python -m nn_xp``, classification advice, progress and History.plot."""
from __future__ import annotations

import copy
import io
import math
import multiprocessing
import operator
import pickle
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
from helpers import assert_on_backend, make_net

import nn_xp
from nn_xp import backends
from nn_xp._progress import LINE_WIDTH, Progress, format_logs
from nn_xp.backends import BackendUnavailableError, to_numpy

RNG = np.random.default_rng(7)
X4 = RNG.normal(size=(60, 4))
LABELS = (X4[:, 0] > 0).astype(int) + (X4[:, 1] > 0)  # classes 0, 1, 2
ONE_HOT = np.eye(3)[LABELS]


def _size(a) -> int:
    """Bytes of an array of any backend (the array API has no nbytes)."""
    return math.prod(a.shape) * np.dtype(str(a.dtype).rpartition(".")[2]).itemsize


def _weights_equal(a: nn_xp.Network, b: nn_xp.Network) -> bool:
    return all(np.array_equal(p, q) for pair_a, pair_b in zip(a.get_weights(), b.get_weights())
               for p, q in zip(pair_a, pair_b))


# ------------------------------------------------------------------ 7: summary
def test_summary_lists_layers_and_where_the_network_lives(backend):
    net = make_net(backend, [4, 30, 10, 3], ["tanh", "relu", "softmax"], loss="cross_entropy")
    s = net.summary()
    assert [(r["units_in"], r["units_out"], r["activation"]) for r in s.layers] == \
        [(4, 30, "tanh"), (30, 10, "relu"), (10, 3, "softmax")]
    assert [r["parameters"] for r in s.layers] == [w.size + b.size for w, b in net.get_weights()]
    assert s.parameters == sum(w.size + b.size for w, b in net.get_weights())
    assert s.parameter_bytes == s.parameters * 8  # float64
    assert (s.dtype, s.backend, s.device, s.engine) == ("float64", backend.name, str(backend.device),
                                                        net.engine.name)
    assert s.fit_bytes is None and s.fit_total is None
    text = str(s)
    assert repr(s) == text and f"{s.parameters:,}" in text and "softmax" in text and net.engine.name in text
    assert all(len(line) <= LINE_WIDTH for line in text.splitlines())


def test_summary_counts_what_the_portable_engine_allocates(backend):
    """Per-layer Z and A (an identity's A is its Z) and the gradients, as one step makes them."""
    net = make_net(backend, [4, 12, 5, 2], ["relu", "sigmoid", "identity"], engine="portable")
    s = net.summary(batch_size=16, optimizer="adam")
    X = backend.asarray(X4[:16], dtype=net.dtype)
    values = net.evaluate(X)
    made = {id(a): a for pair in values[1:] for a in pair}  # the identity's (Z, A) is one array
    assert s.fit_bytes["activations"] == sum(map(_size, made.values()))
    _, grads = net.value_and_gradient(values, backend.asarray(np.zeros((16, 2)), dtype=net.dtype))
    assert s.fit_bytes["gradients"] == sum(map(_size, grads))
    net.fit(X4[:16], np.zeros((16, 2)), epochs=1, optimizer="adam")
    state = [a for slots in net.optimizer.state.values() for a in slots.values()]
    assert s.fit_bytes["optimizer"] == sum(map(_size, state)) == 2 * s.parameter_bytes
    assert s.fit_bytes["undo"] == 2 * (s.parameter_bytes + s.fit_bytes["optimizer"])
    assert s.fit_total == sum(s.fit_bytes.values())


def test_summary_counts_the_buffered_engines_kept_buffers():
    """The figures equal the buffers the buffered engine keeps after a fit (workspace, gradients, ones)."""
    net = nn_xp.Network([4, 64, 32, 3], "relu", loss="cross_entropy", backend="numpy", dtype="float32")
    assert net.engine.name == "buffered"
    net.engine.workspace_min_elements = 0  # a workspace for any size
    net.fit(X4, LABELS, epochs=2, batch_size=25, optimizer="adam")
    s = net.summary(batch_size=25)
    assert s.optimizer == "Adam"  # the network's own, from its fit
    ws = net.engine.workspace(net.layers, 25)
    assert net.engine.workspace_rows == 25
    assert s.fit_bytes["activations"] == sum(a.nbytes for a in ws.Z + ws.A if a is not None)
    assert s.fit_bytes["gradients"] == net.engine.gradients(net.parameters).flat.nbytes
    assert s.fit_bytes["ones"] == net.engine.ones(25).nbytes
    state = [a for slots in net.optimizer.state.values() for a in slots.values()]
    assert s.fit_bytes["optimizer"] == sum(a.nbytes for a in state)
    assert "batch_size=25 (Adam)" in str(s)
    assert net.summary(25, optimizer="sgd").fit_bytes["optimizer"] == 0


def test_summary_checks_its_arguments():
    net = nn_xp.Network([2, 3, 1], backend="numpy")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        net.summary(batch_size=0)
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'"):
        net.summary(batch_size=8, optimizer="adamm")



def test_summary_states_dropout_and_penalties_and_counts_the_masks():
    plain = nn_xp.Network([4, 8, 6, 1], "relu", backend="numpy", dtype="float64")
    net = nn_xp.Network([4, 8, 6, 1], "relu", backend="numpy", dtype="float64", dropout=[0.5, 0.0], l2=0.01)
    assert "in fit:" not in str(plain.summary())
    assert "in fit: dropout 0.5, 0, l2 0.01 on the weights" in str(net.summary())
    extra = net.summary(batch_size=10).fit_bytes
    assert "dropout" not in plain.summary(batch_size=10).fit_bytes
    assert extra["dropout"] == 2 * 10 * 8 * 8  # the first hidden layer's mask and masked A, float64

# ------------------------------------------------------------------ 9: pickling
def _trained(backend, **kwargs):
    net = make_net(backend, [4, 8, 3], ["tanh", "softmax"], loss="cross_entropy", **kwargs)
    net.fit(X4, LABELS, epochs=3, batch_size=16, optimizer=nn_xp.Adam(0.01))
    return net


def test_pickle_round_trip_then_training_is_bit_identical(backend):
    net = _trained(backend)
    net.extra_setting = {"note": [1, 2.5, "x"]}  # a plain attribute another part of nn_xp might add
    back = pickle.loads(pickle.dumps(net))
    assert back.backend.name == backend.name and back.device == backend.device
    assert back.engine.name == net.engine.name and back.dtype_name == "float64"
    assert back.extra_setting == net.extra_setting
    assert back.history.history == net.history.history and back.history.epoch == net.history.epoch
    assert _weights_equal(back, net)
    assert back.optimizer is not net.optimizer and back.optimizer.iterations == net.optimizer.iterations
    for name, slots in net.optimizer.state.items():
        for slot, a in slots.items():
            saved = back.optimizer.state[name][slot]
            assert_on_backend(saved, backend, "float64")
            assert np.array_equal(to_numpy(saved), to_numpy(a))
    for p in back.parameters:
        assert_on_backend(p, backend, "float64")
    for n in (net, back):  # the same shuffles, steps and moments from here on
        n.fit(X4, LABELS, epochs=4, batch_size=16)
    assert _weights_equal(back, net)
    assert back.history.history == net.history.history
    assert back.rng.bit_generator.state == net.rng.bit_generator.state


def test_deepcopy_is_independent(backend):
    net = _trained(backend)
    twin = copy.deepcopy(net)
    assert _weights_equal(twin, net) and twin.rng is not net.rng
    before = net.get_weights()
    twin.fit(X4, LABELS, epochs=2, batch_size=16)
    assert not _weights_equal(twin, net)
    assert all(np.array_equal(p, q) for a, b in zip(before, net.get_weights()) for p, q in zip(a, b))
    assert net.optimizer.iterations != twin.optimizer.iterations


def test_device_arrays_in_attributes_come_back_on_the_device(backend):
    net = make_net(backend, [2, 3, 1])
    net.cache = [backend.asarray(np.arange(3.0)), backend.xp]  # a device array, and a namespace
    back = pickle.loads(pickle.dumps(net))
    assert_on_backend(back.cache[0], backend, "float64")
    assert to_numpy(back.cache[0]).tolist() == [0.0, 1.0, 2.0]
    assert back.cache[1] is None  # a module cannot be pickled: a cache to rebuild


def test_pickle_holds_no_device_objects():
    pytest.importorskip("torch")  # torch is the installed backend these messages are about
    import pickletools

    net = _trained(backends.resolve_backend("torch", "cpu"))
    data = pickle.dumps(net)
    strings = [arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str)]
    assert not any(m.startswith(("torch", "array_api_compat")) for m in strings if m != "torch")
    assert data.count(b"torch") == 1  # the backend's name alone


def test_pickled_backend_is_used_whatever_nn_xp_backend_says(monkeypatch):
    net = _trained(backends.resolve_backend("numpy"))
    data = pickle.dumps(net)
    monkeypatch.setenv("NN_XP_BACKEND", "torch")
    assert pickle.loads(data).backend.name == "numpy"


def _moved(net, backend, device):
    state = net.__getstate__()
    state["_pickled"].update(backend=backend, device=device)
    return state


def test_unpickling_where_the_backend_is_not_usable(monkeypatch):
    """A CuPy network opened without a GPU: a clear error, or, with NN_XP_BACKEND set, that backend and a
    warning; the weights and the optimizer come along."""
    pytest.importorskip("torch")  # torch is the installed backend these messages are about
    monkeypatch.delenv("NN_XP_BACKEND", raising=False)
    monkeypatch.delenv("NN_XP_DEVICE", raising=False)
    monkeypatch.setitem(sys.modules, "cupy", None)  # not installed
    net = _trained(backends.resolve_backend("numpy"))
    state = _moved(net, "cupy", 0)
    with pytest.raises(BackendUnavailableError,
                       match=r"pickled on backend 'cupy', device 0, which is not usable here \(.*cupy is not "
                             r"installed.*fix: unpickle it where .* or set NN_XP_BACKEND"):
        nn_xp.Network.__new__(nn_xp.Network).__setstate__(state)
    monkeypatch.setenv("NN_XP_BACKEND", "torch")
    back = nn_xp.Network.__new__(nn_xp.Network)
    with pytest.warns(UserWarning, match="pickled on backend 'cupy'.*opened on torch on cpu instead"):
        back.__setstate__(_moved(net, "cupy", 0))
    assert back.backend.name == "torch" and _weights_equal(back, net)
    assert back.optimizer.iterations == net.optimizer.iterations


def test_unpickling_on_a_missing_torch_gpu_says_so(monkeypatch):
    pytest.importorskip("torch")  # torch is the installed backend these messages are about
    monkeypatch.delenv("NN_XP_BACKEND", raising=False)
    monkeypatch.delenv("NN_XP_DEVICE", raising=False)
    net = nn_xp.Network([2, 3, 1], backend="torch", device="cpu")
    if sys.modules["torch"].cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(BackendUnavailableError,
                       match=r"pickled on backend 'torch', device 'cuda:0'.*torch sees 0"):
        nn_xp.Network.__new__(nn_xp.Network).__setstate__(_moved(net, "torch", "cuda:0"))


def test_joblib_dump_and_load(tmp_path):
    joblib = pytest.importorskip("joblib")
    net = _trained(backends.resolve_backend("numpy"))
    joblib.dump(net, tmp_path / "net.joblib")
    back = joblib.load(tmp_path / "net.joblib")
    assert _weights_equal(back, net)
    np.testing.assert_array_equal(back.predict(X4), net.predict(X4))


def test_a_network_goes_to_a_spawned_process_and_trains_there_as_here():
    net = _trained(backends.resolve_backend("numpy"))
    train = operator.methodcaller("fit", X4, LABELS, epochs=2, batch_size=16)  # picklable: no test module
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        there = pool.apply(train, (net,))
    here = train(net)
    assert there.history == here.history and there.epoch == here.epoch


# ------------------------------------------------------------------ 10: dtype objects
def _dtype_objects():
    """Every installed library's dtype objects (CI's NumPy 1.x run has NumPy and array-api-strict alone)."""
    objects = [(np.float32, "float32"), (np.float64, "float64"), (np.dtype("float32"), "float32"),
               (float, "float64")]
    try:
        import array_api_strict
        objects += [(array_api_strict.float32, "float32"), (array_api_strict.float64, "float64")]
    except ImportError:
        pass
    try:
        import torch
        objects += [(torch.float32, "float32"), (torch.float64, "float64")]
    except ImportError:
        pass
    try:
        import jax.numpy as jnp
        objects += [(jnp.float32, "float32"), (jnp.dtype("float64"), "float64")]
    except ImportError:
        pass
    return objects


@pytest.mark.parametrize("dtype, name", _dtype_objects(), ids=repr)
def test_dtype_objects_name_the_precision(dtype, name):
    net = nn_xp.Network([2, 3, 1], backend="numpy", dtype=dtype)
    assert net.dtype_name == name and isinstance(net.dtype_name, str)
    assert net.dtype == backends.resolve_backend("numpy").dtype(name)
    assert pickle.loads(pickle.dumps(net)).dtype_name == name


def test_the_backends_own_dtype_objects(backend):
    for name in ("float32", "float64"):
        net = make_net(backend, [2, 3, 1], dtype=getattr(backend.xp, name))
        assert net.dtype_name == name and net.dtype == backend.dtype(name)
        net.fit(X4[:, :2], X4[:, :1], epochs=1)
        assert_on_backend(net.parameters[0], backend, name)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, None, "double", object()], ids=repr)
def test_bad_dtypes_name_the_argument(dtype):
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        nn_xp.Network([2, 3, 1], backend="numpy", dtype=dtype)


# ------------------------------------------------------------------ 11: python -m nn_xp, fixes
def _main(capsys, *argv):
    from nn_xp.__main__ import main

    code = main(list(argv))
    return code, capsys.readouterr().out


def test_python_m_nn_xp_says_what_network_does_here(monkeypatch, capsys):
    monkeypatch.setenv("NN_XP_BACKEND", "array_api_strict")
    monkeypatch.setenv("NN_XP_DEVICE", "device1")
    code, out = _main(capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("backend ") and lines[-1].startswith("auto picks: ")
    assert "NN_XP_BACKEND='array_api_strict'" in out and "NN_XP_DEVICE='device1'" in out
    assert "Network() here uses: backend 'array_api_strict' on device array_api_strict.Device('device1'); " \
           "fit's engine: portable" in out
    monkeypatch.delenv("NN_XP_BACKEND")
    monkeypatch.delenv("NN_XP_DEVICE")
    code, out = _main(capsys)
    auto = out.splitlines()[-1].split()[-1]
    assert code == 0 and "NN_XP_BACKEND is not set (auto)" in out
    assert f"Network() here uses: backend '{auto}'" in out


def test_python_m_nn_xp_says_why_network_fails(monkeypatch, capsys):
    pytest.importorskip("torch")  # torch is the installed backend these messages are about
    monkeypatch.setenv("NN_XP_BACKEND", "tensorflow")
    code, out = _main(capsys)
    assert code == 1
    assert "Network() here fails: ValueError: unknown backend 'tensorflow' (from NN_XP_BACKEND)" in out
    monkeypatch.setenv("NN_XP_BACKEND", "torch")
    monkeypatch.setenv("NN_XP_DEVICE", "cuda:7")
    code, out = _main(capsys)
    if code == 1:  # no 8th GPU here (the usual case)
        assert "Network() here fails: BackendUnavailableError" in out
        assert "that device came from NN_XP_DEVICE='cuda:7': change or unset it" in out


def test_python_m_nn_xp_help():
    done = subprocess.run([sys.executable, "-m", "nn_xp", "--help"], capture_output=True, text=True,
                          check=True)
    assert done.stdout.startswith("usage: python -m nn_xp") and "NN_XP_BACKEND" in done.stdout
    assert "NN_XP_DEVICE" in done.stdout and "exit status" in done.stdout


def test_fix_messages_are_complete_sentences(monkeypatch):
    pytest.importorskip("torch")  # torch is the installed backend these messages are about
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setenv("NN_XP_BACKEND", "cupy")
    monkeypatch.delenv("NN_XP_DEVICE", raising=False)
    with pytest.raises(BackendUnavailableError) as info:
        backends.resolve_backend()
    message = str(info.value)
    assert message.endswith("; or unset NN_XP_BACKEND, and auto picks 'numpy' here")
    assert ") or unset" not in message
    with pytest.raises(BackendUnavailableError) as info:  # a device argument: NN_XP_DEVICE is not the fix
        backends.resolve_backend("torch", "cuda:7")
    if "NN_XP_DEVICE" in str(info.value) or "sees 0" not in str(info.value):
        pytest.fail(f"a device given as an argument must not send the user to NN_XP_DEVICE: {info.value}")


@pytest.mark.parametrize("error, words", [
    ("cudaErrorNoDevice: no CUDA-capable device is detected", "no GPU"),
    ("cudaErrorSystemDriverMismatch: system has unsupported display driver / cuda driver combination",
     "different versions (a driver updated without a reboot)"),
    ("cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are busy or unavailable", "none is available"),
])
def test_cupy_reasons_name_the_problem(monkeypatch, error, words):
    fake = types.ModuleType("cupy")
    fake.__version__ = "14.0-fake"

    def count():
        raise RuntimeError(error)

    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=count, driverGetVersion=lambda: 13000, runtimeGetVersion=lambda: 13000))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backends, "_cupy_distributions", lambda: ("cupy-cuda13x",))
    reason = backends.available_backends()["cupy"]["reason"]
    assert words in reason and "fix: " in reason and error.split(":")[0] in reason


# ------------------------------------------------------------------ 12: classification advice
def test_one_hot_targets_with_the_default_mse_warn(backend):
    net = make_net(backend, [4, 6, 3])
    with pytest.warns(UserWarning, match="Y holds one-hot rows.*'mse', the default.*loss='cross_entropy'"):
        net.fit(X4, ONE_HOT, epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_net(backend, [4, 6, 3], loss="mse").fit(X4, ONE_HOT, epochs=1)  # chosen: no warning
        make_net(backend, [4, 6, 1]).fit(X4, LABELS > 0, epochs=1)  # one output: regression on 0/1
        make_net(backend, [4, 6, 3]).fit(X4, ONE_HOT * 0.5, epochs=1)  # not one-hot


def test_class_labels_for_several_regression_outputs_are_an_error():
    net = nn_xp.Network([4, 6, 3], backend="numpy")
    with pytest.raises(ValueError, match=r"Y is 1-D .* 3 outputs and loss='mse': for class labels use "
                                         r"loss='cross_entropy'.*shape \(n_samples, 3\)"):
        net.fit(X4, LABELS, epochs=1)


def test_class_ids_shaped_n_by_1_are_accepted_by_cross_entropy(backend):
    flat, column = (make_net(backend, [4, 6, 3], ["tanh", "softmax"], loss="cross_entropy") for _ in range(2))
    flat.fit(X4, LABELS, epochs=3)
    column.fit(X4, LABELS.reshape(-1, 1), epochs=3, validation_data=(X4, LABELS.reshape(-1, 1)))
    assert _weights_equal(flat, column)
    assert column.score(X4, LABELS.reshape(-1, 1)) == flat.score(X4, LABELS)
    with pytest.raises(ValueError, match="whole class ids in 0..2"):
        column.fit(X4, (LABELS + 1).reshape(-1, 1), epochs=1)


def test_cross_entropy_with_one_output_suggests_binary_cross_entropy():
    with pytest.raises(ValueError, match="one output unit per class.*loss='binary_cross_entropy'"):
        nn_xp.Network([4, 6, 1], loss="cross_entropy", backend="numpy")


def test_binary_cross_entropy_takes_targets_in_0_1_only(backend):
    net = make_net(backend, [4, 6, 1], loss="binary_cross_entropy")
    net.fit(X4, np.full(60, 0.3), epochs=1)  # soft labels: probabilities are targets too
    with pytest.raises(ValueError, match=r"Y must hold values in \[0, 1\] for loss='binary_cross_entropy'.*"
                                         r"from 0 to 2; for class ids 0..K-1 use loss='cross_entropy'"):
        net.fit(X4, LABELS, epochs=1)
    with pytest.raises(ValueError, match="from -1 to 1; map -1/.1 labels to 0/1"):
        net.fit(X4, np.where(LABELS > 0, 1, -1), epochs=1)
    with pytest.raises(ValueError, match="validation Y must hold values in"):
        net.fit(X4, LABELS > 0, epochs=1, validation_data=(X4, LABELS))
    with pytest.raises(ValueError, match="Y must hold values in"):
        net.score(X4, LABELS)


def test_an_early_stopping_class_instead_of_an_instance():
    net = nn_xp.Network([2, 3, 1], backend="numpy")
    with pytest.raises(TypeError, match=r"callbacks got the class EarlyStopping, not an instance of it: "
                                        r"write EarlyStopping\(...\)"):
        net.fit(X4[:, :2], X4[:, :1], epochs=1, callbacks=[nn_xp.EarlyStopping])
    with pytest.raises(TypeError, match="the class EarlyStopping"):
        net.fit(X4[:, :2], X4[:, :1], epochs=1, callbacks=nn_xp.EarlyStopping)


def test_an_integer_instead_of_layer_sizes():
    with pytest.raises(ValueError, match=r"layer_sizes must list the units per layer, input first: \[n_in, "
                                        r"\.\.\., n_out\] \(Network\(\[4, 16, 1\]\).*got the integer 4"):
        nn_xp.Network(4, backend="numpy")


# ------------------------------------------------------------------ 13: progress
MANY = {"loss": 0.000123456789, "accuracy": 0.987654321, "mae": 12.3456789, "rmse": 1234.56789,
        "val_loss": 0.000234567891, "val_accuracy": 0.876543219, "val_mae": 23.4567891,
        "val_rmse": 2345.67891}


def test_metrics_shorten_to_fit():
    assert format_logs({"loss": 0.5, "accuracy": 0.25}, 80) == "loss=0.5 accuracy=0.25"
    assert format_logs(MANY, 200) == " ".join(f"{k}={v:.6g}" for k, v in MANY.items())
    assert "val_accuracy=0.8765 " in format_logs(MANY, 120)  # 4 digits
    short = format_logs(MANY, 110)
    assert len(short) <= 110 and "val_acc=0.8765 " in short and "loss=0.0001235" in short
    assert "val_acc=0.877 " in format_logs(MANY, 100) == format_logs(MANY, 20)  # the shortest; callers wrap


def test_progress_lines_fit_in_80_columns(capsys):
    progress = Progress(1000, 2)
    progress.update(46, MANY)
    progress.note("EarlyStopping: " + "x " * 60)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("epoch 47/1000 loss=") and len(lines) >= 3
    assert all(len(line) <= LINE_WIDTH for line in lines)
    assert " ".join(lines[:-2]).count("=") == len(MANY)  # every metric, wrapped, not cut


def test_early_stopping_says_where_it_stopped_and_what_it_restored(capsys):
    net = nn_xp.Network([1, 8, 1], backend="numpy", dtype="float64")
    x = np.linspace(-1, 1, 40).reshape(-1, 1)
    stop = nn_xp.EarlyStopping("val_loss", patience=3)
    history = net.fit(x, x**2, epochs=2000, learning_rate=5.0, validation_data=(x, -x), callbacks=[stop],
                      verbose=2)
    err = capsys.readouterr().err
    assert stop.stopped_epoch is not None and len(history) == stop.stopped_epoch + 1
    expected = (f"EarlyStopping: stopped at epoch {stop.stopped_epoch + 1} (val_loss did not improve for 3 "
                f"epochs); restored the weights of epoch {stop.best_epoch + 1} (val_loss={stop.best:.6g})")
    assert " ".join(err.split()).endswith(expected)
    assert all(len(line) <= LINE_WIDTH for line in err.splitlines())
    net.fit(x, x**2, epochs=5, validation_data=(x, -x), callbacks=[nn_xp.EarlyStopping(patience=3)])
    assert capsys.readouterr().err == ""  # verbose=0: nothing


class _FakeTrainer:
    full_batch, m, batch_size = False, 10, 3

    def __init__(self):
        self.calls = 0

    def batch(self, *args):
        self.calls += 1
        return args


def test_the_per_batch_bar_counts_launched_batches(monkeypatch):
    err = io.StringIO()
    err.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", err)
    progress = Progress(2, 3)
    trainer = _FakeTrainer()
    progress.follow(trainer)
    assert progress.batches.total == 4
    assert trainer.batch(1, 2) == (1, 2) and trainer.calls == 1
    for _ in range(3):
        trainer.batch()
    assert progress.batches.n == 4
    progress.update(0, {"loss": 0.5})
    assert progress.batches.n == 0 and progress.bar.n == 1
    progress.close()
    quiet = Progress(2, 1)  # verbose=1: no per-batch bar
    quiet.follow(plain := _FakeTrainer())
    assert quiet.batches is None and "batch" not in vars(plain)
    quiet.close()


def test_fit_verbose_3_trains_as_verbose_0(backend, capsys):
    a, b = (make_net(backend, [4, 5, 3], ["relu", "softmax"], loss="cross_entropy") for _ in range(2))
    a.fit(X4, LABELS, epochs=3, batch_size=16, verbose=3)  # not a terminal here: lines
    b.fit(X4, LABELS, epochs=3, batch_size=16)
    assert _weights_equal(a, b)
    assert capsys.readouterr().err.count("epoch ") == 3


# ------------------------------------------------------------------ 14: History.plot
def test_history_plot_draws_every_curve():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net = nn_xp.Network([4, 6, 3], ["tanh", "softmax"], loss="cross_entropy", backend="numpy")
    history = net.fit(X4, LABELS, epochs=5, validation_split=0.25)
    assert net.history is history
    fig = history.plot()
    try:
        axes = fig.axes
        assert [ax.get_title() for ax in axes] == ["loss", "accuracy"]
        for ax in axes:
            for line in ax.get_lines():
                np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 6))
                np.testing.assert_array_equal(line.get_ydata(), history[line.get_label()])
        assert sorted(line.get_label() for line in axes[0].get_lines()) == ["loss", "val_loss"]
    finally:
        plt.close(fig)
    fig, ax = plt.subplots()
    try:
        assert history.plot("val_accuracy", ax=ax) is fig
        assert [line.get_label() for line in ax.get_lines()] == ["val_accuracy"]
    finally:
        plt.close(fig)
    with pytest.raises(KeyError, match="no key 'mae' in this history, which has"):
        history.plot(["loss", "mae"])


def test_history_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    history = nn_xp.History({"loss": [1.0, 0.5]}, [0, 1])
    with pytest.raises(ImportError, match=r"History.plot draws with matplotlib.*pip install 'nn_xp\[plot\]'"):
        history.plot()
