"""Fuzzing ``load`` and ``load_checkpoint``: damaged or hostile files raise ModelFileError, quickly,
nothing else."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nn_xp
from nn_xp.checkpoint import load_checkpoint
from nn_xp.io import ModelFileError, load

SIZES, ACTS = [3, 4, 2], ["tanh", "identity"]
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _net() -> nn_xp.Network:
    return nn_xp.Network(SIZES, ACTS, backend="numpy", dtype="float64", seed=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid checkpoint (a model file with optimizer state too) as bytes, and a scratch path."""
    folder = tmp_path_factory.mktemp("fuzz")
    X = np.random.default_rng(0).standard_normal((12, 3))
    _net().fit(X, X[:, :2] ** 2, epochs=2, batch_size=5, optimizer="adam",
               checkpoint=folder / "ck.safetensors")
    return (folder / "ck.safetensors").read_bytes(), folder / "fuzzed.safetensors"


def _split(raw: bytes) -> tuple[int, bytes, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return n, raw[8:8 + n], raw[8 + n:]


def _load_all(path, must_fail: bool) -> None:
    """``load`` and ``load_checkpoint`` raise ModelFileError naming the file, or (unless ``must_fail``)
    succeed."""
    for attempt in (lambda: load(path, backend="numpy"), lambda: load_checkpoint(path, _net(), nn_xp.Adam())):
        try:
            attempt()
        except ModelFileError as exc:
            assert str(path) in str(exc)
            event(str(exc).split(": ", 1)[1][:40])  # shown by --hypothesis-show-statistics
        else:
            event("loaded")
            assert not must_fail, "a damaged file loaded"


@FUZZ
@given(data=st.data())
def test_truncated_anywhere(files, data):
    raw, path = files
    path.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
    _load_all(path, must_fail=True)


@FUZZ
@given(data=st.data())
def test_bit_flips(files, data):
    """Flips in the tensor data may give another valid file; anything else must be refused cleanly."""
    raw, path = files
    n = _split(raw)[0]
    region = data.draw(st.sampled_from([8 * 8, 8 * (8 + n), 8 * len(raw)]))  # length field, header, anywhere
    damaged = bytearray(raw)
    for bit in data.draw(st.lists(st.integers(0, region - 1), min_size=1, max_size=6)):
        damaged[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(damaged))
    _load_all(path, must_fail=False)


@FUZZ
@given(n=st.integers(0, 2 ** 64 - 1))
def test_lying_header_length(files, n):
    raw, path = files
    true_n, header, rest = _split(raw)
    if n == true_n:
        n += 1
    path.write_bytes(struct.pack("<Q", n) + header + rest)
    _load_all(path, must_fail=True)


@FUZZ
@given(junk=st.binary(min_size=1, max_size=8), at=st.integers(0, 10 ** 6))
def test_non_utf8_header(files, junk, at):
    raw, path = files
    _, header, rest = _split(raw)
    at %= len(header) + 1
    header = header[:at] + b"\xff" + junk + header[at:]  # 0xff never occurs in UTF-8
    path.write_bytes(struct.pack("<Q", len(header)) + header + rest)
    _load_all(path, must_fail=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=20)


@FUZZ
@given(header=json_values, data=st.binary(max_size=64))
def test_arbitrary_json_header(files, header, data):
    path = files[1]
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)
    _load_all(path, must_fail=True)


@FUZZ
@given(data=st.data())
def test_arbitrary_metadata_fields(files, data):
    """Any field of the nn_xp metadata (checkpoint and optimizer parts included) replaced by any JSON
    value."""
    raw, path = files
    _, header, rest = _split(raw)
    header = json.loads(header)
    meta = json.loads(header["__metadata__"]["nn_xp"])
    parts = [meta, meta["optimizer"], meta["optimizer"]["config"], meta["checkpoint"],
             meta["checkpoint"]["rng"], meta["checkpoint"]["rng"]["state"], meta["checkpoint"]["history"]]
    for _ in range(data.draw(st.integers(1, 3))):
        part = data.draw(st.sampled_from(parts))
        key = data.draw(st.sampled_from(sorted(part)) | st.text(max_size=5))
        part[key] = data.draw(json_values)
    header["__metadata__"]["nn_xp"] = json.dumps(meta)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + rest)
    _load_all(path, must_fail=False)


@st.composite
def crafted(draw):
    """A header whose metadata and tensor entries are each plausible, and often almost consistent."""
    sizes = draw(st.lists(st.integers(1, 5) | st.integers(2 ** 30, 2 ** 70), min_size=2, max_size=4))
    dtype = draw(st.sampled_from(["float64"] * 4 + ["float32"] * 4 + ["float16"]))
    meta = {"format": "nn_xp", "format_version": draw(st.sampled_from([1] * 8 + [0, 2])),
            "layer_sizes": sizes,
            "activations": ["tanh"] * (len(sizes) - 2) + ["identity"], "loss": "mse", "dtype": dtype}
    code = {"float64": "F64", "float32": "F32", "float16": "F16"}[dtype]
    itemsize = {"F64": 8, "F32": 4, "F16": 2, "I32": 4, "BOOL": 1}
    shapes = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"W{i}"], shapes[f"b{i}"] = [n_out, n_in], [n_out]
    names = draw(st.sampled_from([list(shapes), list(shapes)[:-1], list(shapes) + ["optimizer/W0/m", "x"]]))
    header, offset = {"__metadata__": {"nn_xp": json.dumps(meta)}}, 0
    for name in names:
        entry_dtype = draw(st.sampled_from([code] * 8 + ["F64", "I32", "BOOL"]))
        shape = shapes.get(name, shapes["W0"])
        shape = draw(st.sampled_from([shape, shape, shape[::-1], shape + [1], [2 ** 64] * len(shape)]))
        nbytes = itemsize[entry_dtype] * int(np.prod([float(d) for d in shape]))  # may be huge
        nbytes = draw(st.sampled_from([nbytes, nbytes, nbytes + 1, 8, 2 ** 64]))
        begin = draw(st.sampled_from([offset, offset, 0, -1, offset + 1]))
        header[name] = {"dtype": entry_dtype, "shape": shape, "data_offsets": [begin, begin + nbytes]}
        offset = begin + nbytes
    data_len = draw(st.sampled_from([offset, offset - 1, 64, 0])) if 0 <= offset < 10 ** 6 else 64
    return header, max(data_len, 0)


@FUZZ
@given(case=crafted())
def test_crafted_headers(files, case):
    """Huge shapes, lying metadata, bad offsets: refused (or, when consistent after all, loaded), never
    allocated."""
    header, data_len = case
    path = files[1]
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + bytes(data_len))
    _load_all(path, must_fail=False)
