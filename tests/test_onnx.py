"""ONNX export: the graph onnxruntime runs gives predict's outputs (every activation, loss/output pairing,
dtype and CPU backend), the file is written atomically and only after ``check`` passed, and scikit-learn
pipelines holding nn_xp's estimators convert through skl2onnx."""
from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import pytest
from helpers import make_net

import nn_xp
from nn_xp import export
from nn_xp.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(0)
X = RNG.standard_normal((37, 4)) * 3  # an odd batch; negative values reach relu's and leaky relu's other side
TOL = {"float32": 1e-5, "float64": 1e-12}  # 25x and 470x the largest differences measured
HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu"]
PAIRINGS = {  # loss -> (output activation, output units)
    "mse": ("identity", 2),
    "mse-sigmoid": ("sigmoid", 2),
    "binary_cross_entropy": ("sigmoid", 1),
    "binary_cross_entropy-3": ("sigmoid", 3),
    "cross_entropy": ("softmax", 3),
    "poisson": ("exp", 2),
}


def _session(path_or_bytes):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else _bytes(path_or_bytes)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _run(path, X, dtype):
    return _session(path).run(None, {"X": np.asarray(X, dtype=dtype)})


def _close(actual, desired, dtype):
    assert actual.dtype == np.dtype(dtype)
    np.testing.assert_allclose(actual, desired, rtol=TOL[dtype], atol=TOL[dtype])


def _bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------------ the graph
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_every_hidden_activation_matches_predict(backend, tmp_path, hidden, dtype):
    net = make_net(backend, [4, 9, 7, 2], [hidden, hidden, "identity"], dtype=dtype, seed=1)
    path = tmp_path / "m.onnx"
    export_onnx(net, path)
    (out,) = _run(path, X, dtype)
    _close(out, net.predict(X), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pairing", list(PAIRINGS))
def test_every_loss_output_pairing_with_labels(backend, tmp_path, pairing, dtype):
    out_act, n_out = PAIRINGS[pairing]
    net = make_net(backend, [4, 6, n_out], ["tanh", out_act], loss=pairing.split("-")[0], dtype=dtype, seed=2)
    path = tmp_path / "m.onnx"
    export_onnx(net, path, labels=True, check=X)
    proba, labels = _run(path, X, dtype)
    _close(proba, net.predict(X), dtype)
    want = net.predict_classes(X)
    assert labels.dtype == np.int64 and labels.shape == want.shape
    np.testing.assert_array_equal(labels, want)
    assert len(np.unique(want)) > 1  # the labels are not one constant


def test_leaky_relu_is_exact_in_float64(tmp_path):
    # ONNX's LeakyRelu holds its slope as a float32 attribute: 6.6e-10 off; Max(Z, Mul(Z, slope)) is not
    net = nn_xp.Network([4, 16, 1], ["leaky_relu", "identity"], backend="numpy", dtype="float64", seed=3)
    export_onnx(net, tmp_path / "m.onnx")
    (out,) = _run(tmp_path / "m.onnx", X * 100, "float64")
    np.testing.assert_allclose(out, net.predict(X * 100), rtol=1e-13, atol=1e-13)
    ops = [n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node]
    assert "LeakyRelu" not in ops and "Max" in ops


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_and_dtype_kept_exactly(backend, tmp_path, dtype):
    net = make_net(backend, [4, 5, 3], ["relu", "softmax"], loss="cross_entropy", dtype=dtype)
    export_onnx(net, tmp_path / "m.onnx")
    model = onnx.load(tmp_path / "m.onnx")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for i, (W, b) in enumerate(net.get_weights()):
        for name, want in ((f"W{i}", W), (f"b{i}", b)):
            assert inits[name].dtype == np.dtype(dtype) and inits[name].shape == want.shape
            np.testing.assert_array_equal(inits[name], want)
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    assert [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)] == [elem, elem]


@pytest.mark.parametrize("rows", [1, 0, 2, 1000])
def test_dynamic_batch_dimension(tmp_path, rows):
    net = nn_xp.Network([4, 8, 3], ["sigmoid", "softmax"], "cross_entropy", backend="numpy", dtype="float32")
    path = tmp_path / "m.onnx"
    export_onnx(net, path, labels=True)
    model = onnx.load(path)
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*model.graph.input, *model.graph.output)]
    assert dims == [["batch", 4], ["batch", 3], ["batch"]]
    Xr = RNG.standard_normal((rows, 4))
    proba, labels = _run(path, Xr, "float32")
    assert proba.shape == (rows, 3) and labels.shape == (rows,)
    if rows:
        _close(proba, net.predict(Xr), "float32")
        np.testing.assert_array_equal(labels, net.predict_classes(Xr))


def test_names_metadata_and_opset(tmp_path):
    net = nn_xp.Network([4, 6, 5, 1], ["tanh", "leaky_relu", "sigmoid"], "binary_cross_entropy",
                        backend="numpy", dtype="float64")
    path = tmp_path / "m.onnx"
    export_onnx(net, path, labels=True, opset=18)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["X"]
    assert [o.name for o in model.graph.output] == ["Y", "labels"]
    props = {p.key: p.value for p in model.metadata_props}
    assert props == {"nn_xp_version": nn_xp.__version__, "layer_sizes": "[4, 6, 5, 1]",
                     "activations": json.dumps(net.activations), "loss": "binary_cross_entropy",
                     "dtype": "float64", "outputs": '["Y", "labels"]'}
    assert (model.producer_name, model.producer_version) == ("nn_xp", nn_xp.__version__)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 18)]
    assert model.ir_version == onnx.helper.find_min_ir_version_for(list(model.opset_import))
    export_onnx(net, path)
    assert [(o.domain, o.version) for o in onnx.load(path).opset_import] == [("", export.DEFAULT_OPSET)]
    assert os.path.getsize(path) < 8192  # a few KB


def test_check_takes_the_networks_own_arrays(backend, tmp_path, monkeypatch):
    net = make_net(backend, [4, 5, 2], ["leaky_relu", "identity"], seed=7)
    export_onnx(net, tmp_path / "m.onnx", check=backend.asarray(X))
    monkeypatch.setattr(export, "LEAKY_SLOPE", 0.5)
    with pytest.raises(ValueError, match="Y differs"):
        export_onnx(net, tmp_path / "m.onnx", check=backend.asarray(X))


def test_public_api():
    assert nn_xp.export_onnx is export_onnx and "export_onnx" in nn_xp.__all__


def test_trained_network_and_str_path(tmp_path):
    net = nn_xp.Network([4, 16, 3], ["relu", "softmax"], "cross_entropy", backend="numpy", seed=0)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    net.fit(X, y, epochs=50, optimizer="adam", learning_rate=0.05)
    path = str(tmp_path / "m.onnx")
    export_onnx(net, path, check=X, labels=True)
    assert net.score(X, y) > 0.8
    np.testing.assert_array_equal(_run(path, X, "float32")[1], net.predict_classes(X))


# ------------------------------------------------------------------ check, and the file
def _existing(tmp_path) -> tuple[str, bytes]:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the old model")
    return path, b"the old model"


def test_failing_check_leaves_the_old_file(tmp_path, monkeypatch):
    net = nn_xp.Network([4, 8, 2], ["leaky_relu", "identity"], backend="numpy", dtype="float64", seed=4)
    path, old = _existing(tmp_path)
    monkeypatch.setattr(export, "LEAKY_SLOPE", 0.02)  # an exporter bug: the graph's slope is not the model's
    with pytest.raises(ValueError, match=r"m\.onnx: not written: onnxruntime's Y differs from net\.predict"):
        export_onnx(net, path, check=X)
    assert _bytes(path) == old and os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left
    monkeypatch.undo()
    export_onnx(net, path, check=X)
    assert _bytes(path) != old and os.listdir(tmp_path) == ["m.onnx"]


def test_failing_check_writes_no_new_file(tmp_path, monkeypatch):
    net = nn_xp.Network([4, 8, 2], ["leaky_relu", "identity"], backend="numpy", seed=4)
    monkeypatch.setattr(export, "LEAKY_SLOPE", 0.02)
    with pytest.raises(ValueError, match="not written"):
        export_onnx(net, tmp_path / "m.onnx", check=X)
    assert os.listdir(tmp_path) == []


def _perturb(monkeypatch, change):
    """onnxruntime's outputs passed through ``change(outputs) -> outputs``."""
    run = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run", lambda self, *a, **k: change(run(self, *a, **k)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("factor, passes", [(0.5, True), (2.0, False)])
def test_check_tolerance(tmp_path, monkeypatch, dtype, factor, passes):
    net = nn_xp.Network([4, 8, 2], ["tanh", "identity"], backend="numpy", dtype=dtype, seed=5)
    want = net.predict(X)
    tol = export.TOLERANCE[dtype]
    # every element moved by factor times its allowance, tol * (1 + |predict|), from predict's value
    _perturb(monkeypatch, lambda out: [(want + factor * tol * (1 + np.abs(want))).astype(dtype)])
    path, old = _existing(tmp_path)
    if passes:
        export_onnx(net, path, check=X)
        assert _bytes(path) != old
    else:
        with pytest.raises(ValueError, match=f"37 of 37 rows.*tolerance {tol:g} for {dtype}"):
            export_onnx(net, path, check=X)
        assert _bytes(path) == old


def test_check_catches_wrong_labels_and_nan(tmp_path, monkeypatch):
    net = nn_xp.Network([4, 8, 3], ["tanh", "softmax"], "cross_entropy", backend="numpy", seed=6)
    path, old = _existing(tmp_path)
    _perturb(monkeypatch, lambda out: [out[0], (out[1] + 1) % 3])
    with pytest.raises(ValueError, match="labels differ from net.predict_classes"):
        export_onnx(net, path, check=X, labels=True)
    monkeypatch.undo()
    _perturb(monkeypatch, lambda out: [np.full_like(out[0], np.nan)])
    with pytest.raises(ValueError, match="Y differs .* by up to NaN"):
        export_onnx(net, path, check=X)
    monkeypatch.undo()
    _perturb(monkeypatch, lambda out: [out[0][:, :2]])
    with pytest.raises(ValueError, match=r"Y is float32 \(37, 2\), net.predict\(check\) float32 \(37, 3\)"):
        export_onnx(net, path, check=X)
    assert _bytes(path) == old


def test_check_accepts_any_label_at_an_exact_tie(tmp_path, monkeypatch):
    net = nn_xp.Network([4, 8, 3], ["tanh", "softmax"], "cross_entropy", backend="numpy", seed=6)
    (W0, b0), (W1, b1) = net.get_weights()
    net.set_weights([(W0, b0), (np.zeros_like(W1), b1 * 0)])  # every class 1/3 for every sample
    _perturb(monkeypatch, lambda out: [out[0], (out[1] + 1) % 3])
    export_onnx(net, tmp_path / "m.onnx", check=X, labels=True)


@pytest.mark.parametrize("check, match", [
    (np.zeros((3, 5)), "check has 5 columns, the network expects 4"),
    (np.zeros((0, 4)), "check is empty"),
    (np.full((2, 4), np.nan), "check contains NaN"),
    (np.zeros(4), "check must be 2-D"),
])
def test_bad_check_data(tmp_path, check, match):
    net = nn_xp.Network([4, 3, 1], backend="numpy")
    with pytest.raises(ValueError, match=match):
        export_onnx(net, tmp_path / "m.onnx", check=check)
    assert os.listdir(tmp_path) == []


def test_bad_arguments(tmp_path):
    net = nn_xp.Network([4, 3, 1], backend="numpy")
    with pytest.raises(nn_xp.ModelFileError, match="is a folder; export_onnx needs a file name"):
        export_onnx(net, tmp_path)
    with pytest.raises(FileNotFoundError, match="the folder .*missing does not exist"):
        export_onnx(net, tmp_path / "missing" / "m.onnx")
    with pytest.raises(TypeError, match="the network comes first"):
        export_onnx(tmp_path / "m.onnx", net)
    with pytest.raises(TypeError, match="path must be a file path"):
        export_onnx(net, 3)
    for opset in (12, onnx.defs.onnx_opset_version() + 1, 17.0, True):
        with pytest.raises(ValueError, match=f"opset must be an integer from 13 to .*got {opset!r}"):
            export_onnx(net, tmp_path / "m.onnx", opset=opset)
    with pytest.raises(TypeError, match="labels must be True or False"):
        export_onnx(net, tmp_path / "m.onnx", labels="yes")
    assert os.listdir(tmp_path) == []


def test_non_finite_weights_and_custom_activations_refused(tmp_path):
    net = nn_xp.Network([4, 3, 1], backend="numpy")
    net.params["W0"][0, 0] = np.inf  # as a diverged fit would leave it
    with pytest.raises(ValueError, match="NaN or infinity"):
        export_onnx(net, tmp_path / "m.onnx")
    custom = nn_xp.Activation("swish", lambda z, xp, out=None: z, lambda z, a, xp: z, lambda d, z, a, xp: d)
    with pytest.raises(ValueError, match="custom activation 'swish'"):
        export_onnx(nn_xp.Network([4, 3, 1], [custom, "identity"], backend="numpy"), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def _without(monkeypatch, module):
    """``import module`` fails, as where it is not installed."""
    monkeypatch.setitem(sys.modules, module, None)


def test_missing_extra_is_named(tmp_path, monkeypatch):
    net = nn_xp.Network([4, 3, 1], backend="numpy")
    with monkeypatch.context() as m:
        _without(m, "onnx")
        with pytest.raises(ImportError, match=r"export_onnx needs onnx: pip install 'nn_xp\[onnx\]'"):
            export_onnx(net, tmp_path / "m.onnx")
    with monkeypatch.context() as m:
        _without(m, "onnxruntime")
        with pytest.raises(ImportError, match=r"check=.*needs onnxruntime: pip install 'nn_xp\[onnx\]'"):
            export_onnx(net, tmp_path / "m.onnx", check=X)
        assert os.listdir(tmp_path) == []
        export_onnx(net, tmp_path / "m.onnx")  # without check, onnx alone is enough
    assert os.listdir(tmp_path) == ["m.onnx"]


# ------------------------------------------------------------------ scikit-learn pipelines through skl2onnx
def _pipeline(backend, estimator, y, dtype, **kwargs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xs = (X * 10 + 5).astype(dtype)  # far from standardised: the scaler matters
    pipe = make_pipeline(StandardScaler(), estimator(hidden_layer_sizes=(8,), max_iter=40, random_state=0,
                                                     backend=backend.name, device=backend.device, **kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(Xs, y)
    return pipe, Xs


def _to_onnx(pipe, Xs, **kwargs):
    skl2onnx = pytest.importorskip("skl2onnx")
    export.register_skl2onnx()
    return skl2onnx.to_onnx(pipe, Xs[:1], target_opset=17, **kwargs).SerializeToString()


LABEL_SETS = {
    "multiclass": np.array(["low", "mid", "high"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)],
    "binary": (X[:, 2] > 0).astype(int) * 3 + 1,
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("labels", list(LABEL_SETS))
def test_classifier_pipeline_through_skl2onnx(backend, dtype, labels):
    nn_sklearn = pytest.importorskip("nn_xp.sklearn")
    pipe, Xs = _pipeline(backend, nn_sklearn.MLPClassifier, LABEL_SETS[labels], dtype, activation="relu")
    data = _to_onnx(pipe, Xs, options={"zipmap": False})
    got_labels, proba = _session(data).run(None, {"X": Xs})
    np.testing.assert_array_equal(got_labels, pipe.predict(Xs))
    np.testing.assert_allclose(proba, pipe.predict_proba(Xs), rtol=TOL[dtype], atol=TOL[dtype])
    assert len(np.unique(got_labels)) > 1


def test_multilabel_classifier_through_skl2onnx(backend):
    nn_sklearn = pytest.importorskip("nn_xp.sklearn")
    y = (X[:, :3] > 0).astype(int)  # three labels (onnxruntime's Binarizer has no double kernel: float32)
    pipe, Xs = _pipeline(backend, nn_sklearn.MLPClassifier, y, "float32", activation="tanh")
    got_labels, proba = _session(_to_onnx(pipe, Xs, options={"zipmap": False})).run(None, {"X": Xs})
    np.testing.assert_array_equal(got_labels, pipe.predict(Xs))
    np.testing.assert_allclose(proba, pipe.predict_proba(Xs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("outputs", [1, 2])
def test_regressor_pipeline_through_skl2onnx(backend, dtype, outputs):
    nn_sklearn = pytest.importorskip("nn_xp.sklearn")
    y = X[:, 0] * 2 + 1 if outputs == 1 else X[:, :2] * [1.0, -2.0]
    pipe, Xs = _pipeline(backend, nn_sklearn.MLPRegressor, y, dtype, activation="logistic")
    (got,) = _session(_to_onnx(pipe, Xs)).run(None, {"X": Xs})
    assert got.shape == (len(Xs), outputs) and got.dtype == np.dtype(dtype)
    want = pipe.predict(Xs).reshape(len(Xs), outputs)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])
    (empty,) = _session(_to_onnx(pipe, Xs)).run(None, {"X": Xs[:0]})
    assert empty.shape == (0, outputs)


def test_register_skl2onnx_names_its_extra(monkeypatch):
    pytest.importorskip("nn_xp.sklearn")
    _without(monkeypatch, "skl2onnx")
    with pytest.raises(ImportError, match=r"needs skl2onnx: pip install 'nn_xp\[sklearn-onnx\]'"):
        export.register_skl2onnx()
