"""Model files and checkpoints: round trips across backends, checked loading, atomic writes, resumable
training."""
from __future__ import annotations

import json
import os
import re
import struct
import time
import tracemalloc

import numpy as np
import pytest
import safetensors.numpy
from conftest import SPECS
from helpers import assert_close, make_net
from safetensors import safe_open

import nn_xp
from nn_xp.checkpoint import load_checkpoint, save_checkpoint
from nn_xp.io import ModelFileError, load, save

RNG = np.random.default_rng(0)
X = RNG.standard_normal((24, 3))
Y = np.tanh(X @ RNG.standard_normal((3, 2)))
LABELS = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)  # 3 classes

ARCHS = {
    "mse": ([3, 5, 2], ["tanh", "identity"], "mse"),
    "cross_entropy": ([3, 6, 4, 3], ["relu", "leaky_relu", "softmax"], "cross_entropy"),
    "bce": ([3, 4, 1], ["sigmoid", "sigmoid"], "binary_cross_entropy"),
}


def _targets(request) -> list[tuple[str, str, object]]:
    """(test id, backend name, device) of every backend this run covers."""
    return [(p.values[0], *SPECS[p.values[0]]) for p in request.config._nn_xp_params if not p.marks]


def _flat(net) -> list[np.ndarray]:
    return [a for pair in net.get_weights() for a in pair]


def _assert_same_weights(a, b, exact=True, rtol=1e-12):
    for wa, wb in zip(_flat(a), _flat(b), strict=True):
        assert wa.dtype == wb.dtype
        if exact:
            np.testing.assert_array_equal(wa, wb)
        else:
            np.testing.assert_allclose(wa, wb, rtol=rtol, atol=rtol)


def _parts(path) -> tuple[dict, bytes]:
    """A safetensors file as (header dict, data bytes)."""
    raw = _bytes(path)
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(path, header, data=b"") -> None:
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + data)


def _model_file(path, **kwargs):
    net = nn_xp.Network([3, 5, 2], ["tanh", "identity"], backend="numpy", dtype="float64", **kwargs)
    net.fit(X, Y, epochs=2, optimizer="adam", learning_rate=0.01)
    save(net, path)
    return net


def _edit_meta(path, **changes) -> None:
    """Rewrite a model file with some 'nn_xp' metadata fields replaced (None deletes)."""
    header, data = _parts(path)
    meta = json.loads(header["__metadata__"]["nn_xp"])
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    header["__metadata__"]["nn_xp"] = json.dumps(meta)
    _write(path, header, data)


def _raises(path, match: str = ""):
    """ModelFileError whose message names the file (and matches ``match``)."""
    return pytest.raises(ModelFileError, match=re.escape(str(path)) + ".*" + match)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_to_every_backend(backend, request, tmp_path, arch, dtype):
    sizes, acts, loss = ARCHS[arch]
    net = make_net(backend, sizes, acts, loss=loss, dtype=dtype, seed=3)
    path = tmp_path / "model.safetensors"
    save(net, path)
    expected = net.predict(X)
    for test_id, name, device in _targets(request):
        loaded = load(path, backend=name, device=device)
        assert (loaded.layer_sizes, loaded.activations, loaded.loss_fn.name, loaded.dtype_name) == (
            sizes, acts, loss, dtype), test_id
        assert loaded.backend == nn_xp.resolve_backend(name, device), test_id
        assert_close(loaded.params["W0"], net.get_weights()[0][0], backend=loaded.backend, dtype=dtype,
                     rtol=0)
        _assert_same_weights(loaded, net)  # bit-equal
        rtol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(loaded.predict(X), expected, rtol=rtol, atol=rtol, err_msg=test_id)


def test_save_accepts_str_and_replaces_existing_file(tmp_path):
    path = str(tmp_path / "m.safetensors")
    first = _model_file(path)
    second = nn_xp.Network([3, 5, 2], ["tanh", "identity"], backend="numpy", dtype="float64", seed=9)
    save(second, path)
    _assert_same_weights(load(path, backend="numpy"), second)
    assert not np.array_equal(first.get_weights()[0][0], second.get_weights()[0][0])
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_optimizer_state_round_trip(backend, tmp_path):
    path = tmp_path / "m.safetensors"
    net = make_net(backend, [3, 5, 2], ["tanh", "identity"])
    net.fit(X, Y, epochs=3, optimizer="adam", learning_rate=0.01)
    save(net, path)
    loaded = load(path, backend=backend.name, device=backend.device)
    assert isinstance(loaded.optimizer, nn_xp.Adam) and loaded.optimizer.iterations == 3
    assert loaded.optimizer.config() == net.optimizer.config()
    net.fit(X, Y, epochs=3)  # continues with net.optimizer
    loaded.fit(X, Y, epochs=3)
    _assert_same_weights(loaded, net, exact=backend.name == "numpy")


@pytest.mark.parametrize("optimizer", [nn_xp.SGD(0.05, momentum=0.9, nesterov=True), nn_xp.AdamW(0.01),
                                       nn_xp.SGD(0.1)], ids=["sgd-nesterov", "adamw", "sgd"])
def test_every_builtin_optimizer_round_trips(tmp_path, optimizer):
    path = tmp_path / "m.safetensors"
    net = nn_xp.Network([3, 5, 2], ["tanh", "identity"], backend="numpy", dtype="float64")
    net.fit(X, Y, epochs=2, optimizer=optimizer)
    save(net, path)
    loaded = load(path, backend="numpy")
    assert type(loaded.optimizer) is type(optimizer) and loaded.optimizer.config() == optimizer.config()
    net.fit(X, Y, epochs=2)
    loaded.fit(X, Y, epochs=2)
    _assert_same_weights(loaded, net)


def test_without_optimizer_or_with_a_schedule(tmp_path):
    path = tmp_path / "m.safetensors"
    net = _model_file(path)
    save(net, path, include_optimizer=False)
    assert load(path, backend="numpy").optimizer is None
    assert not any(k.startswith("optimizer/") for k in safetensors.numpy.load_file(path))
    net.fit(X, Y, epochs=2, optimizer=nn_xp.Adam(nn_xp.StepDecay(0.01, every=2)))
    save(net, path)  # a schedule has no JSON form: the state is kept, the optimizer is not rebuilt
    meta = json.loads(safe_open(path, framework="numpy").metadata()["nn_xp"])
    assert meta["optimizer"] == {"name": "adam", "config": None, "iterations": 2}
    assert load(path, backend="numpy").optimizer is None


def test_custom_activation_is_refused(tmp_path):
    custom = nn_xp.Activation("cube", lambda z, xp: z ** 3, lambda z, a, xp: 3 * z ** 2,
                              lambda dA, z, a, xp: dA * 3 * z ** 2)
    net = nn_xp.Network([2, 3, 1], [custom, "identity"], backend="numpy")
    with pytest.raises(ValueError, match="custom activation 'cube'"):
        save(net, tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == []


def test_file_is_plain_safetensors_readable_by_torch(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.safetensors"
    sizes, acts, loss = ARCHS["cross_entropy"]
    net = nn_xp.Network(sizes, acts, loss, backend="numpy", dtype="float64", seed=1)
    net.fit(X, LABELS, epochs=5, optimizer="adam", learning_rate=0.01)
    save(net, path)
    tensors = safetensors.numpy.load_file(path)
    with safe_open(path, framework="numpy") as f:
        meta = json.loads(f.metadata()["nn_xp"])
    assert (meta["format"] == "nn_xp" and meta["format_version"] == 1
            and meta["nn_xp_version"] == nn_xp.__version__)
    assert ((meta["layer_sizes"], meta["activations"], meta["loss"], meta["dtype"])
            == (sizes, acts, loss, "float64"))
    assert tensors["W0"].shape == (6, 3) and tensors["b0"].shape == (6,)
    assert tensors["optimizer/W0/m"].shape == (6, 3)

    functions = {"relu": torch.relu, "leaky_relu": torch.nn.functional.leaky_relu, "tanh": torch.tanh,
                 "sigmoid": torch.sigmoid, "identity": lambda z: z,
                 "softmax": lambda z: torch.softmax(z, dim=1)}
    a = torch.from_numpy(X)
    with torch.no_grad():
        for i, name in enumerate(meta["activations"]):
            layer = torch.nn.Linear(*tensors[f"W{i}"].shape[::-1], dtype=torch.float64)
            layer.weight.copy_(torch.from_numpy(tensors[f"W{i}"]))
            layer.bias.copy_(torch.from_numpy(tensors[f"b{i}"]))
            a = functions[name](layer(a))
    np.testing.assert_allclose(a.numpy(), net.predict(X), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ checked loading
def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    with _raises(path, "no such model file"):
        load(path, backend="numpy")
    with _raises(tmp_path, "cannot be read"):
        load(tmp_path, backend="numpy")  # a folder


@pytest.mark.parametrize("cut", ["empty", "length", "header", "header-end", "data", "last-byte"])
def test_truncated_file(tmp_path, cut):
    path = tmp_path / "m.safetensors"
    _model_file(path)
    raw = _bytes(path)
    n = struct.unpack("<Q", raw[:8])[0]
    at = {"empty": 0, "length": 5, "header": 8 + n // 2, "header-end": 8 + n, "data": 8 + n + 20,
          "last-byte": len(raw) - 1}[cut]
    path.write_bytes(raw[:at])
    with _raises(path):
        load(path, backend="numpy")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path, seed):
    path = tmp_path / "noise.bin"
    noise = np.random.default_rng(seed).bytes(2000)
    if seed % 2:  # a plausible header length, then noise
        noise = struct.pack("<Q", 1000) + noise[8:]
    path.write_bytes(noise)
    with _raises(path):
        load(path, backend="numpy")


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}], ids=["no-metadata", "torch-metadata"])
def test_safetensors_file_that_is_not_an_nn_xp_model(tmp_path, metadata):
    path = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"weight": np.zeros((2, 2), np.float32)}, path, metadata=metadata)
    with _raises(path, "not an nn_xp model"):
        load(path, backend="numpy")


def test_newer_format_version(tmp_path):
    path = tmp_path / "m.safetensors"
    _model_file(path)
    _edit_meta(path, format_version=2, nn_xp_version="9.0")
    with _raises(path, "nn_xp 9.0 in format version 2.*upgrade nn_xp"):
        load(path, backend="numpy")


@pytest.mark.parametrize("change, match", [
    ({"layer_sizes": [3, 6, 2]}, "tensor 'W0' has shape"),
    ({"layer_sizes": [3, 5, 2, 2], "activations": ["tanh", "tanh", "identity"]}, "lacks the tensors"),
    ({"layer_sizes": [3, 5]}, "invalid activations"),
    ({"layer_sizes": [3, 0, 2]}, "invalid layer_sizes"),
    ({"layer_sizes": "3-5-2"}, "invalid layer_sizes"),
    ({"activations": ["tanh", "swish"]}, "invalid activations"),
    ({"activations": ["softmax", "identity"]}, "cannot build"),
    ({"loss": "hinge"}, "unknown loss"),
    ({"loss": ["mse"]}, "unknown loss"),
    ({"dtype": "float16"}, "dtype 'float16'"),
    ({"dtype": "float32"}, "is 'F64', the metadata says float32"),
    ({"format": "keras"}, "not an nn_xp model"),
    ({"format_version": "1"}, "invalid format_version"),
    ({"format_version": None}, "invalid format_version"),
    ({"optimizer": None}, "does not describe"),
    ({"optimizer": {"name": "adam", "config": {"learning_rate": -1.0}, "iterations": 2}},
     "config.*not valid"),
    ({"optimizer": {"name": "adam", "config": {"lr": 0.1}, "iterations": 2}}, "config.*not valid"),
    ({"optimizer": {"name": "adam", "config": None, "iterations": -2}}, "invalid optimizer metadata"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_metadata_that_lies_or_is_invalid(tmp_path, change, match):
    path = tmp_path / "m.safetensors"
    _model_file(path)
    _edit_meta(path, **change)
    with _raises(path, match):
        load(path, backend="numpy")


def _header_and_data(tmp_path):
    path = tmp_path / "m.safetensors"
    _model_file(path)
    header, data = _parts(path)
    return path, header, data


HEADER_LIES = {
    "dtype-I32": (lambda h: h["W0"].update(dtype="I32"), "is 'I32'"),
    "dtype-F16": (lambda h: h["W0"].update(dtype="F16"), "is 'F16'"),
    "shape-transposed": (lambda h: h["W0"].update(shape=[3, 5]), "has shape"),
    "shape-3d": (lambda h: h["W0"].update(shape=[5, 3, 1]), "has shape"),
    "shape-negative": (lambda h: h["W0"].update(shape=[-5, 3]), "malformed"),
    "shape-string": (lambda h: h["W0"].update(shape="5x3"), "malformed"),
    "offsets-outside-file": (lambda h: h["W0"].update(data_offsets=[0, 10 ** 9]), "offsets"),
    "offsets-too-short": (lambda h: h["W0"].update(data_offsets=[0, 8]), "offsets"),
    "offsets-overlap": (lambda h: h["W0"].update(data_offsets=[8, 128]), "overlap or leave gaps"),
    "offsets-one": (lambda h: h["W0"].update(data_offsets=[0]), "malformed"),
    "no-dtype": (lambda h: h["W0"].pop("dtype"), "malformed"),
    "entry-not-object": (lambda h: h.update(W0=[1, 2]), "malformed"),
    "missing-tensor": (lambda h: h.pop("b1"), "lacks the tensors"),
    "extra-tensor": (lambda h: h.update(extra=dict(h["b1"])), "'extra'"),
    "optimizer-unknown-param": (lambda h: h.update({"optimizer/W9/m": dict(h["b1"])}), "optimizer/W9/m"),
    "optimizer-no-slot": (lambda h: h.update({"optimizer/W0/": dict(h["b1"])}), "optimizer/W0/"),
    "metadata-not-strings": (lambda h: h["__metadata__"].update(other=3), "map of strings"),
    "metadata-a-list": (lambda h: h.update(__metadata__=["nn_xp"]), "map of strings"),
}


@pytest.mark.parametrize("lie", list(HEADER_LIES))
def test_header_that_lies(tmp_path, lie):
    edit, match = HEADER_LIES[lie]
    path, header, data = _header_and_data(tmp_path)
    edit(header)
    _write(path, header, data)
    with _raises(path, match):
        load(path, backend="numpy")


def test_tensor_with_another_dtype_and_nan_weights(tmp_path):
    path, header, _ = _header_and_data(tmp_path)
    meta = header["__metadata__"]
    tensors = {k: v.astype(np.int32) for k, v in safetensors.numpy.load_file(path).items()}
    safetensors.numpy.save_file(tensors, path, metadata=meta)
    with _raises(path, "is 'I32'"):
        load(path, backend="numpy")
    tensors = {k: v.astype(np.float64) for k, v in tensors.items()}
    tensors["b0"][2] = np.nan
    safetensors.numpy.save_file(tensors, path, metadata=meta)
    with _raises(path, "tensor b0 holds NaN"):
        load(path, backend="numpy")


@pytest.mark.parametrize("header", [
    b"\xff\xfe" + b"{}",
    b"{\"__metadata__\": {\"nn_xp\": \"\xc3\x28\"}}",
    b"{\"__metadata__\": {\"nn_xp\": \"{\\\"format\\\": \\\"nn_\xff\\\"}\"}}",
], ids=["bom", "invalid-utf8-in-metadata", "invalid-utf8-in-nested-json"])
def test_header_not_utf8(tmp_path, header):
    path = tmp_path / "m.safetensors"
    _write(path, header)
    with _raises(path, "not UTF-8"):
        load(path, backend="numpy")


@pytest.mark.parametrize("header, match", [
    (b"{not json", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),  # nesting too deep for the parser
    (b"[1, 2]", "JSON list"),
    (json.dumps({"__metadata__": {"nn_xp": "{oops"}}).encode(), "'nn_xp' metadata that is not valid JSON"),
    (json.dumps({"__metadata__": {"nn_xp": "[1]"}}).encode(), "not an nn_xp model"),
], ids=["broken", "deeply-nested", "a-list", "broken-metadata", "metadata-a-list"])
def test_header_not_json(tmp_path, header, match):
    path = tmp_path / "m.safetensors"
    _write(path, header)
    with _raises(path, match):
        load(path, backend="numpy")


def test_messages_stay_short(tmp_path):
    path = tmp_path / "m.safetensors"
    _model_file(path)
    header, data = _parts(path)
    header["x" * 10 ** 6] = header.pop("b1")
    _write(path, header, data)
    with _raises(path, "holds a tensor 'xxx.*xxx\\.\\.\\. that the metadata") as info:
        load(path, backend="numpy")
    assert len(str(info.value)) < 300
    _write(path, b'{"W0": {"shape": [' + b"9" * 5000 + b']}}')
    with _raises(path, "an integer of 5000 digits"):
        load(path, backend="numpy")


def _fails_fast(path):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with _raises(path):
            load(path, backend="numpy")
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 2_000_000, (elapsed, peak)


@pytest.mark.parametrize("sizes", [[3, 5, 2], [2 ** 31, 2 ** 31, 2], [10 ** 300, 10 ** 300, 1]],
                         ids=["honest-metadata", "huge-metadata", "astronomic-metadata"])
def test_huge_declared_shape_fails_fast(tmp_path, sizes):
    path = tmp_path / "m.safetensors"
    meta = {"format": "nn_xp", "format_version": 1, "layer_sizes": sizes, "activations": ["tanh", "identity"],
            "loss": "mse", "dtype": "float64"}
    header = {"__metadata__": {"nn_xp": json.dumps(meta)}}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        header[f"W{i}"] = {"dtype": "F64", "shape": [n_out, n_in], "data_offsets": [16 * i, 16 * i + 8]}
        header[f"b{i}"] = {"dtype": "F64", "shape": [n_out], "data_offsets": [16 * i + 8, 16 * i + 16]}
    _write(path, header, bytes(32))
    _fails_fast(path)


def test_huge_header_length_fails_fast(tmp_path):
    path = tmp_path / "m.safetensors"
    for n in (2 ** 64 - 1, 2 ** 40, 200_000_000):
        path.write_bytes(struct.pack("<Q", n) + b"{}")
        _fails_fast(path)


# ------------------------------------------------------------------ atomic writes
def _boom(*args, **kwargs):
    raise OSError(28, "No space left on device")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("where, fault", [
    ("safetensors.numpy.save", _boom), ("os.fsync", _boom), ("os.chmod", _boom), ("os.replace", _boom),
    ("os.replace", _interrupt),
])
def test_crash_during_save_leaves_old_file_intact(tmp_path, monkeypatch, where, fault):
    path = tmp_path / "m.safetensors"
    _model_file(path)
    before = _bytes(path)
    net = nn_xp.Network([3, 5, 2], ["tanh", "identity"], backend="numpy", seed=7)
    monkeypatch.setattr(where, fault)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save(net, path)
    monkeypatch.undo()
    assert _bytes(path) == before
    assert os.listdir(tmp_path) == ["m.safetensors"]
    load(path, backend="numpy")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and symlinks")
def test_save_keeps_permissions_and_symlinks(tmp_path):
    mask = os.umask(0o022)
    try:
        new = tmp_path / "new.safetensors"
        _model_file(new)
        assert new.stat().st_mode & 0o777 == 0o644  # 0o666 less the umask, like open()
        os.chmod(new, 0o600)
        _model_file(new)
        assert new.stat().st_mode & 0o777 == 0o600  # replacing does not loosen permissions
    finally:
        os.umask(mask)
    link = tmp_path / "link.safetensors"
    link.symlink_to(new)
    net = _model_file(link)
    assert link.is_symlink()
    _assert_same_weights(load(new, backend="numpy"), net)
    with _raises(tmp_path / "missing" / "m.safetensors", "no such model file"):
        load(tmp_path / "missing" / "m.safetensors", backend="numpy")
    with pytest.raises(FileNotFoundError):
        save(net, tmp_path / "missing" / "m.safetensors")


# ------------------------------------------------------------------ checkpoints and resuming
def _train(backend, epochs, seed=0, **kwargs):
    net = make_net(backend, [3, 6, 2], ["tanh", "identity"], seed=seed)
    kwargs.setdefault("optimizer", "adam")
    kwargs.setdefault("learning_rate", 0.01)
    net.fit(X, Y, epochs=epochs, batch_size=5, **kwargs)
    return net


def _same_history(a, b, exact):
    assert a.epoch == b.epoch and a.history.keys() == b.history.keys()
    for key in a.history:
        if exact:
            assert a.history[key] == b.history[key], key
        else:
            np.testing.assert_allclose(a.history[key], b.history[key], rtol=1e-12)


def test_resumed_training_equals_uninterrupted(backend, tmp_path):
    exact = backend.name == "numpy"
    whole = _train(backend, 6, checkpoint=tmp_path / "whole.safetensors", checkpoint_every=3)
    _train(backend, 3, checkpoint=tmp_path / "half.safetensors")
    resumed = _train(backend, 6, resume_from=tmp_path / "half.safetensors")
    _assert_same_weights(resumed, whole, exact=exact)
    _same_history(resumed.history, whole.history, exact)
    assert resumed.optimizer.iterations == whole.optimizer.iterations == 6 * 5
    fresh = make_net(backend, [3, 6, 2], ["tanh", "identity"], seed=5)
    epoch, history = load_checkpoint(tmp_path / "whole.safetensors", fresh, nn_xp.Adam())
    assert epoch == 6 and history.epoch == list(range(6))
    _assert_same_weights(fresh, whole)
    assert fresh.rng.bit_generator.state == whole.rng.bit_generator.state


def test_interrupted_then_resumed_training_equals_uninterrupted(backend, tmp_path):
    path = tmp_path / "ck.safetensors"
    whole = _train(backend, 6)

    def stop(epoch, logs):
        if epoch == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(backend, 6, checkpoint=path, checkpoint_every=3, callbacks=stop)
    assert load_checkpoint(path, make_net(backend, [3, 6, 2], ["tanh", "identity"]), nn_xp.Adam())[0] == 3
    resumed = _train(backend, 6, resume_from=path)
    _assert_same_weights(resumed, whole, exact=backend.name == "numpy")
    _same_history(resumed.history, whole.history, backend.name == "numpy")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_classifier_with_validation_and_momentum(tmp_path, optimizer):
    kwargs = dict(optimizer=nn_xp.SGD(0.05, momentum=0.9) if optimizer == "sgd" else nn_xp.AdamW(0.01),
                  batch_size=7, validation_split=0.25)

    def train(epochs, **more):
        net = nn_xp.Network(*ARCHS["cross_entropy"], backend="numpy", dtype="float32", seed=2)
        options = {**kwargs, "optimizer": type(kwargs["optimizer"])(**kwargs["optimizer"].config())}
        net.fit(X, LABELS, epochs=epochs, **options, **more)
        return net

    whole = train(5)
    train(2, checkpoint=tmp_path / "ck.safetensors")
    resumed = train(5, resume_from=tmp_path / "ck.safetensors")
    _assert_same_weights(resumed, whole)
    assert resumed.history.history == whole.history.history
    assert set(whole.history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_resume_restores_another_bit_generator(tmp_path):
    path = tmp_path / "ck.safetensors"

    def train(epochs, seed, **more):
        net = nn_xp.Network([3, 4, 2], ["tanh", "identity"], backend="numpy", dtype="float64", seed=seed)
        net.fit(X, Y, epochs=epochs, batch_size=4, optimizer="sgd", **more)
        return net

    whole = train(4, np.random.Generator(np.random.MT19937(5)))
    train(2, np.random.Generator(np.random.MT19937(5)), checkpoint=path)
    resumed = train(4, 0, resume_from=path)  # a PCG64 network: the checkpoint's MT19937 replaces it
    assert isinstance(resumed.rng.bit_generator, np.random.MT19937)
    _assert_same_weights(resumed, whole)


def test_checkpoint_functions_directly(tmp_path):
    path = tmp_path / "ck.safetensors"
    net = nn_xp.Network([3, 5, 2], ["tanh", "identity"], backend="numpy", seed=np.random.default_rng(8))
    net.rng.random(3)  # a generator that has moved on
    history = nn_xp.History({"loss": [0.5, 0.25]}, [0, 1])
    save_checkpoint(net, path, None, 2, history)
    other = nn_xp.Network([3, 5, 2], ["tanh", "identity"], backend="numpy", seed=1)
    epoch, restored = load_checkpoint(path, other, None)
    assert epoch == 2 and restored.history == history.history and restored.epoch == history.epoch
    assert other.rng.bit_generator.state == net.rng.bit_generator.state
    _assert_same_weights(other, net)
    with _raises(path, "holds no optimizer state, but training uses 'adam'"):
        load_checkpoint(path, other, nn_xp.Adam())
    assert load(path, backend="numpy").optimizer is None  # also a model file


def _checkpoint(tmp_path, optimizer=None, **net_kwargs):
    path = tmp_path / "ck.safetensors"
    net = nn_xp.Network([3, 5, 2], ["tanh", "identity"], backend="numpy", **net_kwargs)
    net.fit(X, Y, epochs=2, optimizer=optimizer or nn_xp.Adam(0.01), checkpoint=path)
    return path


@pytest.mark.parametrize("net_kwargs, optimizer, match", [
    ({"layer_sizes": [3, 4, 2]}, nn_xp.Adam(), "checkpoint of a 3-5-2.*this network is 3-4-2"),
    ({"activations": ["relu", "identity"]}, nn_xp.Adam(), "this network is 3-5-2 \\(relu"),
    ({"dtype": "float64"}, nn_xp.Adam(), "float32.*this network.*float64"),
    ({}, nn_xp.SGD(), "holds 'adam' optimizer state, but training uses 'sgd'"),
    ({}, nn_xp.SGD(momentum=0.5), "holds 'adam' optimizer state"),
], ids=["sizes", "activations", "dtype", "optimizer", "optimizer-momentum"])
def test_checkpoint_must_match_network_and_optimizer(tmp_path, net_kwargs, optimizer, match):
    path = _checkpoint(tmp_path)
    kwargs = {"layer_sizes": [3, 5, 2], "activations": ["tanh", "identity"], "dtype": "float32", **net_kwargs}
    net = nn_xp.Network(backend="numpy", seed=4, **kwargs)
    before, rng_before = _flat(net), net.rng.bit_generator.state
    with _raises(path, match):
        load_checkpoint(path, net, optimizer)
    for a, b in zip(_flat(net), before):  # nothing changed
        np.testing.assert_array_equal(a, b)
    assert net.rng.bit_generator.state == rng_before and optimizer.iterations == 0


def test_checkpoint_optimizer_slots_must_match(tmp_path):
    path = _checkpoint(tmp_path, nn_xp.SGD(0.05, momentum=0.9))
    net = nn_xp.Network([3, 5, 2], ["tanh", "identity"], backend="numpy")
    with _raises(path, "'velocity'.*configure it as when"):
        load_checkpoint(path, net, nn_xp.SGD(0.05))
    epoch, history = load_checkpoint(path, net, nn_xp.SGD(0.05, momentum=0.5))  # other hyper-parameters: fine
    assert epoch == 2 and len(history) == 2


def test_model_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "m.safetensors"
    net = _model_file(path)
    with _raises(path, "not a training checkpoint"):
        load_checkpoint(path, net, net.optimizer)
    with _raises(path, "not a training checkpoint"):
        net.fit(X, Y, epochs=3, resume_from=path)


@pytest.mark.parametrize("change, match", [
    ({"epoch": -1}, "epoch must be"),
    ({"epoch": True}, "epoch must be"),
    ({"history": {"loss": ["x"]}}, "history must map"),
    ({"history": [1.0]}, "history must map"),
    ({"history_epoch": [0, "1"]}, "history_epoch"),
    ({"rng": {"bit_generator": "os.system"}}, "bit generator 'os.system'"),
    ({"rng": None}, "bit generator None"),
    ({"rng": {"bit_generator": "PCG64", "state": {"state": -1, "inc": 1}, "has_uint32": 0, "uinteger": 0}},
     "not a valid PCG64 state"),
    ({"rng": {"bit_generator": "PCG64"}}, "not a valid PCG64 state"),
], ids=["epoch-negative", "epoch-bool", "history-strings", "history-list", "history-epoch", "rng-name",
        "rng-none", "rng-negative", "rng-incomplete"])
def test_checkpoint_metadata_is_checked(tmp_path, change, match):
    path = _checkpoint(tmp_path)
    header, data = _parts(path)
    meta = json.loads(header["__metadata__"]["nn_xp"])
    meta["checkpoint"].update(change)
    header["__metadata__"]["nn_xp"] = json.dumps(meta)
    _write(path, header, data)
    net = nn_xp.Network([3, 5, 2], ["tanh", "identity"], backend="numpy")
    with _raises(path, match):
        load_checkpoint(path, net, nn_xp.Adam())
    load(path, backend="numpy")  # still a model file


def test_checkpoint_write_interrupted_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.safetensors"
    net = nn_xp.Network([3, 5, 2], ["tanh", "identity"], backend="numpy")
    net.fit(X, Y, epochs=2, optimizer="adam", checkpoint=path)
    before = _bytes(path)
    monkeypatch.setattr("os.replace", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=4, optimizer="adam", checkpoint=path)
    monkeypatch.undo()
    assert _bytes(path) == before and os.listdir(tmp_path) == ["ck.safetensors"]
    assert load_checkpoint(path, net, nn_xp.Adam())[0] == 2


# ------------------------------------------------------------------ KeyboardInterrupt inside fit
def test_interrupt_in_callback_keeps_the_finished_epoch(backend):
    net = make_net(backend, [3, 6, 2], ["tanh", "identity"], seed=1)

    def stop(epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=6, batch_size=5, optimizer="adam", learning_rate=0.01, callbacks=stop)
    assert len(net.history) == 3 and net.history.epoch == [0, 1, 2]
    _assert_same_weights(net, _train(backend, 3, seed=1), exact=backend.name == "numpy")


def _interrupting_adam(at_step: int, at_param: int) -> nn_xp.Adam:
    """An Adam raising KeyboardInterrupt in step ``at_step`` (1-based) of the [3, 6, 2] networks below: before
    the ``at_param``-th parameter's (0-based) update where parameters are updated one by one; where they are
    updated all at once as one flat buffer (NumPy), right after that update, so the moments and every
    parameter have moved and the epoch has not ended."""
    opt = nn_xp.Adam(0.01)
    seen, flat_size = [], 3 * 6 + 6 + 6 * 2 + 2

    def update(p, g, state, lr, xp):
        if opt.iterations == at_step:  # a step counts itself before updating
            seen.append(p)
            if tuple(p.shape) == (flat_size,):
                nn_xp.Adam.update(opt, p, g, state, lr, xp)
                raise KeyboardInterrupt
            if len(seen) == at_param + 1:
                raise KeyboardInterrupt
        return nn_xp.Adam.update(opt, p, g, state, lr, xp)

    opt.update = update
    return opt


@pytest.mark.parametrize("batch_size", [None, 5], ids=["full-batch", "mini-batch"])
def test_interrupt_inside_optimizer_step_restores_the_last_epoch(backend, batch_size):
    steps = 1 if batch_size is None else 5  # per epoch (24 samples)
    # a compiled step (jax) runs no host code to interrupt; tests/test_jax.py interrupts it between calls
    eager = {"engine": "portable"} if backend.name == "jax" else {}
    net = make_net(backend, [3, 6, 2], ["tanh", "identity"], seed=1, **eager)
    opt = _interrupting_adam(at_step=3 * steps + 1, at_param=1)  # the 2nd parameter, first step of epoch 3
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=6, batch_size=batch_size, optimizer=opt)
    assert len(net.history) == 3
    reference = make_net(backend, [3, 6, 2], ["tanh", "identity"], seed=1)
    reference.fit(X, Y, epochs=3, batch_size=batch_size, optimizer=nn_xp.Adam(0.01))
    _assert_same_weights(net, reference, exact=backend.name == "numpy")


@pytest.mark.parametrize("batch_size", [None, 5], ids=["full-batch", "mini-batch"])
def test_continuing_after_interrupt_inside_optimizer_step_equals_uninterrupted(batch_size):
    steps = 1 if batch_size is None else 5
    net = nn_xp.Network([3, 6, 2], ["tanh", "identity"], backend="numpy", dtype="float64", seed=1)
    opt = _interrupting_adam(at_step=3 * steps + 1, at_param=1)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=6, batch_size=batch_size, optimizer=opt)
    del opt.update  # back to Adam's
    net.fit(X, Y, epochs=3, batch_size=batch_size)  # continues with net.optimizer
    reference = nn_xp.Network([3, 6, 2], ["tanh", "identity"], backend="numpy", dtype="float64", seed=1)
    reference.fit(X, Y, epochs=6, batch_size=batch_size, optimizer=nn_xp.Adam(0.01))
    _assert_same_weights(net, reference)


def test_save_and_load_take_a_bytes_path(tmp_path):
    """os.PathLike, str and bytes are all paths to open(); save joined a bytes folder with a str name."""
    net = nn_xp.Network([2, 3, 1], backend="numpy", seed=3)
    path = os.fsencode(tmp_path / "model.safetensors")
    nn_xp.save(net, path)
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary left behind
    loaded = nn_xp.load(path)
    for (W, b), (W2, b2) in zip(net.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
