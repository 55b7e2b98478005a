"""Nothing lost, nothing half-done: interrupted and killed saves, racing readers, hostile files, interrupted
training and resumes, and arguments that must be named in the error (issue 14's defects, each a test)."""
from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import SINE_X, SINE_Y

import nn_xp
from nn_xp import ModelFileError, load, save
from nn_xp.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _net(seed=0, **kwargs):
    kwargs.setdefault("dtype", "float64")
    return nn_xp.Network([1, 6, 1], backend="numpy", seed=seed, **kwargs)


def _same(a, b):
    for (W, bias), (W2, bias2) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(bias, bias2)


# ------------------------------------------------------------------ files
def test_a_killed_save_leaves_a_temporary_file_that_the_next_save_removes(tmp_path):
    """A writer killed between writing and renaming (as a preempted job is) leaves its temporary file; the
    next save of that file, by another process, deletes it, and keeps the temporaries of live writers."""
    path = tmp_path / "model.safetensors"
    save(_net(), path)
    killed = ("import os, sys, nn_xp\n"
              "os.replace = lambda *a: os._exit(9)  # killed right before the rename\n"
              "nn_xp.save(nn_xp.Network([1, 6, 1], backend='numpy', seed=1), sys.argv[1])\n")
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", killed, str(path)], cwd=ROOT, timeout=120)
        assert done.returncode == 9
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(leftovers) == 3
    _same(load(path, backend="numpy"), _net())  # the old file is intact
    save(_net(2), path)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    _same(load(path, backend="numpy"), _net(2))


def test_ctrl_c_inside_the_write_leaves_no_temporary_file_and_no_open_descriptor(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save(_net(), path)
    before = _bytes(path)
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None

    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(_net(1), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.safetensors"] and _bytes(path) == before
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds


def test_a_full_disk_is_a_model_file_error_naming_the_target_and_the_old_file_stays(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save(_net(), path)
    before = _bytes(path)

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(ModelFileError, match=r"model\.safetensors: cannot be written \(No space") as info:
        save(_net(1), path)
    assert isinstance(info.value, OSError) and info.value.errno == 28  # as `except OSError` expects
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.safetensors"] and _bytes(path) == before


def test_the_longest_valid_file_name_can_be_saved(tmp_path):
    path = tmp_path / ("m" * (255 - len(".safetensors")) + ".safetensors")
    save(_net(), path)
    _same(load(path, backend="numpy"), _net())
    save(_net(1), path)  # and replaced
    assert os.listdir(tmp_path) == [path.name]


def test_a_reader_racing_a_writer_gets_one_whole_file_or_the_other(tmp_path):
    """float32 and float64 models replace each other at one path; every load is one of them, whole."""
    path = tmp_path / "model.safetensors"
    models = {"float32": _net(1, dtype="float32"), "float64": _net(2, dtype="float64")}
    save(models["float32"], path)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            for net in models.values():
                save(net, path)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        for _ in range(150):
            net = load(path, backend="numpy")
            _same(net, models[net.dtype_name])
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_load_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    result = {}

    def attempt():
        try:
            load(fifo, backend="numpy")
        except Exception as exc:  # what it raised, for the assertion below
            result["error"] = exc

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "load blocked on a FIFO"
    error = result.get("error")
    assert isinstance(error, ModelFileError) and "not a regular file" in str(error)


def test_a_header_naming_a_tensor_twice_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save(_net(), path)
    raw = _bytes(path)
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8:8 + n].decode()
    entry = header[header.index('"W0":'):]
    entry = entry[:entry.index("}") + 1]
    doubled = header.replace(entry, entry + "," + entry, 1).encode()
    path.write_bytes(struct.pack("<Q", len(doubled)) + doubled + raw[8 + n:])
    with pytest.raises(ModelFileError, match="names 'W0' twice"):
        load(path, backend="numpy")


def test_a_checkpoint_missing_one_parameters_moments_is_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    path = tmp_path / "ck.safetensors"
    _net().fit(SINE_X, SINE_Y, epochs=2, optimizer="adam", checkpoint=path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        metadata = json.loads(f.read(n))["__metadata__"]
    tensors = {k: v for k, v in load_file(path).items() if not k.startswith("optimizer/W1/")}
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(ModelFileError, match="lacks W1"):
        load_checkpoint(path, _net(), None)
    with pytest.raises(ModelFileError, match="lacks W1"):
        load(path, backend="numpy")


def test_save_refuses_non_finite_weights_and_keeps_the_good_file(tmp_path):
    path = tmp_path / "model.safetensors"
    net = _net()
    save(net, path)
    before = _bytes(path)
    net.params["W0"][0, 0] = np.nan  # the live parameter, as a diverging update would leave it
    with pytest.raises(ValueError, match=r"NaN or infinity \(W0\): not saved"):
        save(net, path)
    assert _bytes(path) == before and os.listdir(tmp_path) == ["model.safetensors"]


# ------------------------------------------------------------------ training state
def test_ctrl_c_right_after_the_history_is_written_keeps_that_epoch_once(monkeypatch):
    record = nn_xp.training.Run._record
    calls = []

    def interrupted(self, first, rows):
        record(self, first, rows)
        calls.append(first)
        if len(calls) == 3:
            raise KeyboardInterrupt  # after the append, before the epoch's bookkeeping ends

    monkeypatch.setattr(nn_xp.training.Run, "_record", interrupted)
    net = _net()
    with pytest.raises(KeyboardInterrupt):  # a callback: one epoch a call
        net.fit(SINE_X, SINE_Y, epochs=6, batch_size=25, optimizer="adam", callbacks=lambda epoch, logs: None)
    monkeypatch.undo()
    assert net.history.epoch == [0, 1, 2] and len(net.history["loss"]) == 3  # the third had completed
    reference = _net()
    reference.fit(SINE_X, SINE_Y, epochs=3, batch_size=25, optimizer="adam")
    _same(net, reference)
    assert net.history.history == reference.history.history


def test_ctrl_c_during_a_resume_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "ck.safetensors"
    _net(1).fit(SINE_X, SINE_Y, epochs=3, batch_size=25, optimizer="adam", checkpoint=path)
    net = _net(2)
    net.fit(SINE_X, SINE_Y, epochs=2, batch_size=25, optimizer="adam")
    weights, state, rng = net.get_weights(), net.optimizer.state_dict(), net.rng.bit_generator.state

    def interrupted(self, state, params):
        raise KeyboardInterrupt

    monkeypatch.setattr(nn_xp.Adam, "load_state_dict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_checkpoint(path, net, net.optimizer)
    monkeypatch.undo()
    for (W, b), (W0, b0) in zip(net.get_weights(), weights):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    assert net.rng.bit_generator.state == rng
    after = net.optimizer.state_dict()
    assert after["iterations"] == state["iterations"]
    for name, slots in state["state"].items():
        for slot, value in slots.items():
            np.testing.assert_array_equal(after["state"][name][slot], value)


def _overflowing(**kwargs):
    net = nn_xp.Network([1, 1], ["identity"], backend="numpy", dtype="float64", **kwargs)
    net.set_weights([(np.array([[1e150]]), np.array([0.0]))])  # a finite loss whose update overflows
    return net


def test_a_checkpoint_is_never_written_from_weights_whose_last_update_overflowed(tmp_path):
    """Epoch 0's loss is finite, its update overflows; a crash right after the epoch (here Ctrl-C in a
    callback) must leave a checkpoint to resume from, not one of infinite weights."""
    path = tmp_path / "ck.safetensors"
    _overflowing().fit([[1e-160]], [[0.0]], epochs=2, learning_rate=0.1, checkpoint=path)

    def crash(epoch, logs):
        raise KeyboardInterrupt

    net = _overflowing()
    with pytest.raises((FloatingPointError, KeyboardInterrupt)):
        net.fit([[1.0]], [[0.0]], epochs=3, learning_rate=1e200, checkpoint=path, callbacks=crash)
    saved = load(path, backend="numpy")  # loads: its weights are finite
    assert all(np.all(np.isfinite(W)) for W, _ in saved.get_weights())
    np.testing.assert_array_equal(net.get_weights()[0][0], [[1e150]])


def test_warn_with_early_stopping_never_returns_the_weights_of_an_overflowed_update():
    """Mini-batches in order: the first has no residual (no update), the second (last of the epoch) overflows;
    the epoch's mean loss is finite and better than none, so EarlyStopping would keep those weights."""
    net = _overflowing()
    X, Y = np.array([[1e-200], [1.0]]), np.array([[1e-50], [0.0]])  # W x = y on the first row
    stopper = nn_xp.EarlyStopping(monitor="loss", patience=5)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        net.fit(X, Y, epochs=5, batch_size=1, shuffle=False, learning_rate=1e200, on_nonfinite="warn",
                callbacks=stopper)
    assert all(np.all(np.isfinite(W)) and np.all(np.isfinite(b)) for W, b in net.get_weights())


@pytest.mark.parametrize("batch_size", [None, 25])
def test_a_failed_fit_leaves_the_optimizer_the_network_had(batch_size):
    net = _net()
    net.fit(SINE_X, SINE_Y, epochs=2, optimizer="adam")
    adam, weights = net.optimizer, net.get_weights()
    bad = nn_xp.SGD(lambda step: None if step >= 2 else 0.1)  # fails at its third step
    with pytest.raises(ValueError, match="schedule .* gave None for step 0"):
        net.fit(SINE_X, SINE_Y, epochs=1, batch_size=batch_size, optimizer=nn_xp.SGD(lambda step: None))
    assert net.optimizer is adam
    with pytest.raises(ValueError, match="gave None for step 2"):
        net.fit(SINE_X, SINE_Y, epochs=1, batch_size=25, optimizer=bad)  # inside the first epoch
    assert net.optimizer is adam
    _same_weights(net, weights)  # and the half-done epoch undone
    net.fit(SINE_X, SINE_Y, epochs=1)  # a later fit works, with the network's Adam
    assert adam.iterations == 3


# ------------------------------------------------------------------ errors that name the argument
@pytest.mark.parametrize("sizes", [5, None, [3, 2**64, 2], "12"])
def test_bad_layer_sizes_are_named(sizes):
    with pytest.raises(ValueError, match="layer_sizes must list"):
        nn_xp.Network(sizes, backend="numpy")


def test_bad_activations_and_callbacks_are_named():
    with pytest.raises(TypeError, match="activations must be"):
        nn_xp.Network([1, 2, 1], activations=5, backend="numpy")
    with pytest.raises(TypeError, match="callbacks must be"):
        _net().fit(SINE_X, SINE_Y, epochs=1, callbacks=5)


@pytest.mark.parametrize("weights", [None, 5])
def test_bad_set_weights_are_named(weights):
    net = _net()
    before = net.get_weights()
    with pytest.raises(TypeError, match="set_weights expects a sequence"):
        net.set_weights(weights)
    _same_weights(net, before)


def test_compute_gradient_names_bad_values():
    net = _net()
    X, Y = net.backend.asarray(SINE_X), net.backend.asarray(SINE_Y)
    with pytest.raises(ValueError, match="values must hold 3 .Z, A. pairs .* got NoneType"):
        net.compute_gradient(None, Y)
    with pytest.raises(ValueError, match="values must hold 3"):
        net.compute_gradient([1, 2, 3], Y)
    other = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64")
    with pytest.raises(ValueError, match=r"values\[1\] Z has shape \(100, 4\).*another network"):
        net.compute_gradient(other.evaluate(X), Y)


def test_save_takes_the_network_first_and_names_what_is_wrong(tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(TypeError, match=r"save\(net, path, ...\): the network comes first"):
        save(path, _net())
    with pytest.raises(TypeError, match="save: net must be an nn_xp.Network, got NoneType"):
        save(None, path)
    with pytest.raises(TypeError, match="save_checkpoint.*network comes first"):
        save_checkpoint(path, _net(), None, 0, nn_xp.History())
    assert not path.exists()


@pytest.mark.parametrize("state, match", [
    ({}, "state must be a dict like state_dict"),
    ({"iterations": 1, "state": {n: 5 for n in ("W0", "b0", "W1", "b1")}}, "must map slot names"),
    ({"iterations": 1, "state": {"W0": {"m": 0, "v": 0}}}, "lacks b0, W1, b1"),
    ({"iterations": "1", "state": {}}, "state must be a dict like"),
])
def test_load_state_dict_names_a_malformed_state(state, match):
    with pytest.raises(ValueError, match=match):
        nn_xp.Adam().load_state_dict(state, _net().params)


@pytest.mark.parametrize("value", [None, "0.1", math.nan, -1.0])
def test_a_schedule_giving_no_rate_fails_before_any_step(value):
    net = _net()
    before = net.get_weights()
    with pytest.raises(ValueError, match="learning-rate schedule"):
        net.fit(SINE_X, SINE_Y, epochs=1, optimizer=nn_xp.SGD(lambda step: value))
    _same_weights(net, before)
    assert net.optimizer is None


@pytest.mark.parametrize("make", [lambda p: p / "missing" / "ck.safetensors", lambda p: p,
                                  lambda p: str(p / "ck\0.safetensors"), lambda p: 5])
def test_a_bad_checkpoint_path_fails_before_the_first_epoch_naming_it(tmp_path, make):
    net = _net()
    before = net.get_weights()
    with pytest.raises((ModelFileError, ValueError)) as info:
        net.fit(SINE_X, SINE_Y, epochs=2, checkpoint=make(tmp_path))
    assert "checkpoint" in str(info.value) or str(tmp_path) in str(info.value)
    assert ".tmp" not in str(info.value) and net.history is None
    _same_weights(net, before)


def test_save_into_a_missing_folder_is_a_model_file_error_naming_the_target(tmp_path):
    target = tmp_path / "nowhere" / "m.safetensors"
    with pytest.raises(ModelFileError, match=r"nowhere/m\.safetensors: cannot be written") as info:
        save(_net(), target)
    assert isinstance(info.value, FileNotFoundError)  # and still the OSError it is


@pytest.mark.parametrize("rate", [0, -1, math.nan])
def test_sklearn_names_learning_rate_init(rate):
    pytest.importorskip("sklearn")
    from nn_xp.sklearn import MLPRegressor

    with pytest.raises(ValueError, match="learning_rate_init must be a positive number"):
        MLPRegressor(learning_rate_init=rate, backend="numpy").fit(SINE_X, SINE_Y.ravel())


# ------------------------------------------------------------------ helpers
def _bytes(path) -> bytes:
    return Path(path).read_bytes()


def _same_weights(net, weights) -> None:
    for (W, b), (W0, b0) in zip(net.get_weights(), weights):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


# ------------------------------------------------------------------ hostile headers, and a fuzzer
def _with_header(path, change) -> int:
    """Rewrite the model file at ``path`` with ``change(header dict, metadata dict) -> header text``."""
    raw = _bytes(path)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    text = change(header, json.loads(header["__metadata__"]["nn_xp"])).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return len(text)


@pytest.mark.parametrize("bomb", ["objects", "lists", "nested"])
def test_a_json_bomb_header_is_refused_before_it_is_built(tmp_path, bomb):
    import tracemalloc

    path = tmp_path / "m.safetensors"
    save(_net(), path)
    junk = {"objects": ",".join(["{}"] * 400_000), "lists": ",".join(["[]"] * 400_000),
            "nested": "[" * 200_000 + "]" * 200_000}[bomb]
    size = _with_header(path, lambda h, m: json.dumps(h)[:-1] + f',"bomb":[{junk}]}}')
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="denser than any nn_xp header|not valid JSON"):
            load(path, backend="numpy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * size  # the file's bytes and their text, not a million Python objects


def test_layer_sizes_are_counted_against_the_tensors_before_each_is_checked(tmp_path):
    path = tmp_path / "m.safetensors"
    save(_net(), path)

    def longer(header, meta):
        meta["layer_sizes"] = [1] * 200_000
        header["__metadata__"]["nn_xp"] = json.dumps(meta)
        return json.dumps(header)

    _with_header(path, longer)
    with pytest.raises(ModelFileError, match="layer_sizes of 200000 entries, far more than its 2 weight"):
        load(path, backend="numpy")


def test_an_integer_of_a_megabyte_of_digits_is_refused_by_a_scan(tmp_path):
    path = tmp_path / "m.safetensors"
    save(_net(), path)
    _with_header(path, lambda h, m: json.dumps(h)[:-1] + ',"n":' + "9" * 1_000_000 + "}")
    with pytest.raises(ModelFileError, match="an integer of 1000000 digits .at most 64."):
        load(path, backend="numpy")


def test_seeded_mutation_fuzzing_of_load_and_load_checkpoint(tmp_path):
    """3,000 seeded mutations of a valid checkpoint (flips, cuts, splices, header edits): each either loads
    or raises ModelFileError naming the file, never anything else."""
    path = tmp_path / "ck.safetensors"
    _net().fit(SINE_X, SINE_Y, epochs=2, batch_size=25, optimizer="adam", checkpoint=path)
    good = _bytes(path)
    (n,) = struct.unpack("<Q", good[:8])
    rng = np.random.default_rng(14)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(3000):
        raw = bytearray(good)
        kind = rng.integers(5)
        if kind == 0:  # flip bytes, mostly in the header
            for at in rng.integers(0, min(len(raw), 8 + n + 64), size=rng.integers(1, 6)):
                raw[at] ^= 1 << int(rng.integers(8))
        elif kind == 1:  # cut
            raw = raw[:rng.integers(0, len(raw))]
        elif kind == 2:  # splice a chunk of the file elsewhere in it
            a, b, at = sorted(rng.integers(0, len(raw), size=3))
            raw = raw[:at] + raw[a:b] + raw[at:]
        elif kind == 3:  # overwrite a header byte with JSON punctuation
            raw[8 + int(rng.integers(n))] = ord(rng.choice(list('{}[],:"0-e.')))
        else:  # a lying header length
            raw[:8] = struct.pack("<Q", int(rng.integers(0, 2 * len(raw))))
        path.write_bytes(bytes(raw))
        attempts = (lambda: load(path, backend="numpy"), lambda: load_checkpoint(path, _net(), None))
        for attempt in attempts:
            try:
                attempt()
            except ModelFileError as exc:
                assert str(path) in str(exc)
                outcomes["refused"] += 1
            else:
                outcomes["loaded"] += 1
    assert outcomes["refused"] > 4000  # the fuzzer reaches the checks (most mutations break the file)


# ------------------------------------------------------------------ found by a red-team review
def test_an_exception_in_a_callback_after_an_overflowed_update_leaves_finite_weights():
    X = np.linspace(-1, 1, 40).reshape(-1, 1)
    net = nn_xp.Network([1, 8, 1], ["tanh", "identity"], backend="numpy", dtype="float32", seed=0)

    def stop(epoch, logs):
        if epoch == 3:
            raise KeyboardInterrupt  # after epoch 3, whose update (rate 1e300) overflowed

    with pytest.raises(KeyboardInterrupt):
        net.fit(X, X ** 2, epochs=10, optimizer=nn_xp.SGD(lambda s: 1e300 if s == 3 else 0.1),
                callbacks=stop)
    assert all(np.all(np.isfinite(W)) and np.all(np.isfinite(b)) for W, b in net.get_weights())
    assert net.history.epoch == [0, 1, 2]  # epoch 3 rolled back with its weights
    assert math.isfinite(net.loss(X, X ** 2))


@pytest.mark.parametrize("on_nonfinite", ["raise", "warn"])
def test_a_fit_rolled_back_to_its_start_keeps_the_networks_optimizer(on_nonfinite):
    net = _net()
    adam = nn_xp.Adam(0.01)
    net.fit(SINE_X, SINE_Y, epochs=3, optimizer=adam)
    with pytest.warns(RuntimeWarning) if on_nonfinite == "warn" else pytest.raises(FloatingPointError):
        net.fit(SINE_X * 100, SINE_Y, epochs=5, optimizer=nn_xp.SGD(lambda s: 1e300),
                on_nonfinite=on_nonfinite)
    assert net.optimizer is adam and len(net.history) == 0


def test_restoring_another_networks_snapshot_is_an_error():
    small = nn_xp.Network([3, 1, 1], backend="numpy", seed=3)
    for engine in ("buffered", "portable"):
        wide = nn_xp.Network([3, 5, 1], backend="numpy", seed=4, engine=engine)
        before = wide.get_weights()
        with pytest.raises(ValueError, match="a snapshot of another network"):
            wide.restore(small.snapshot())
        _same_weights(wide, before)


def test_resuming_a_custom_optimizers_checkpoint_says_what_is_missing(tmp_path):
    class MyAdam(nn_xp.Adam):
        pass

    path = tmp_path / "ck.safetensors"
    net = _net()
    net.fit(SINE_X, SINE_Y, epochs=2, optimizer=MyAdam(0.01), checkpoint=path)
    with pytest.raises(ModelFileError, match="'myadam' optimizer, which is not one of nn_xp's"):
        _net().fit(SINE_X, SINE_Y, epochs=4, resume_from=path)
    net.fit(SINE_X, SINE_Y, epochs=4, resume_from=path)  # the network's own MyAdam continues
    assert isinstance(net.optimizer, MyAdam) and len(net.history) == 4
