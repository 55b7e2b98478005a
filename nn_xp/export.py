"""Export to ONNX, checked on the way out: an nn_xp network as a graph any ONNX runtime runs.

Each layer is one ``Gemm(transB=1)`` (it takes nn_xp's ``W (n_out, n_in)`` as it
is) and its activation: ``Sigmoid``, ``Tanh``, ``Relu``, ``Softmax(axis=-1)``,
``Identity``, and leaky relu as ``Max(Z, Mul(Z, slope))`` with the slope a
constant of the model's dtype (ONNX's ``LeakyRelu`` takes its slope as a float32
attribute, 6.6e-10 off in float64). The input ``X`` has a dynamic batch dimension;
the output ``Y`` is what :meth:`~nn_xp.Network.predict` gives and, optionally,
``labels`` what :meth:`~nn_xp.Network.predict_classes` gives. ``check=`` runs
onnxruntime on data before anything is written. onnx and onnxruntime are the
optional extra ``nn_xp[onnx]``, imported only when a function here is called;
:func:`register_skl2onnx` lets skl2onnx convert nn_xp's scikit-learn estimators
and the pipelines holding them.

NumPy appears here because the host is the point: weights and results for a file and a runtime.
"""
from __future__ import annotations

import importlib
import json
import os
from typing import Any

import numpy as np

from . import backends
from ._modelfile import error
from ._payload import check_net_and_path, check_writable, payload, write_bytes
from .activations import LEAKY_SLOPE

__all__ = ["DEFAULT_OPSET", "INPUT", "LABELS", "MIN_OPSET", "OUTPUT", "TOLERANCE", "export_onnx",
           "register_skl2onnx"]

_Path = Any  # str or os.PathLike

#: the opset written by default (the one measured); MIN_OPSET is the first whose Softmax takes one axis
DEFAULT_OPSET = 17
MIN_OPSET = 13
#: the graph's input and output names
INPUT, OUTPUT, LABELS = "X", "Y", "labels"
#: ``check`` accepts ``|onnx - predict| <= tol * (1 + |predict|)`` elementwise, with tol for the model's dtype
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}

_SIMPLE = {"identity": "Identity", "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "exp": "Exp"}


def _require(module: str, who: str, extra: str = "onnx") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{who} needs {module}: pip install 'nn_xp[{extra}]'") from None


def export_onnx(net: Any, path: _Path, *, check: Any = None, opset: int | None = None,
                labels: bool = False) -> None:
    """Write ``net`` as an ONNX model, checked against :meth:`~nn_xp.Network.predict` when ``check`` is given.

    Parameters
    ----------
    net : Network
        On any backend: the weights come to the host once.
    path : str or os.PathLike
        Conventionally ``*.onnx``; an existing file is replaced atomically, and
        only once everything (``check`` included) has passed.
    check : array-like, optional
        Data ``(n_samples, n_features)`` as ``predict`` takes it (host NumPy or
        lists, or the network's own arrays): onnxruntime runs the model on it and a
        ``ValueError`` is raised, writing nothing, where its outputs differ from
        ``net.predict(check)`` (and ``net.predict_classes``) by more than
        ``tol * (1 + |predict|)``, tol from :data:`TOLERANCE` for the dtype.
    opset : int, optional
        The ONNX operator set, :data:`MIN_OPSET` or later; default :data:`DEFAULT_OPSET`.
    labels : bool
        Add a second output ``labels`` (int64): ``ArgMax`` of a softmax (or any
        non-sigmoid) output, ``Y > 0.5`` of a sigmoid one, as ``predict_classes``.

    Examples
    --------
    >>> nn_xp.export_onnx(net, "model.onnx", check=X)  # doctest: +SKIP
    >>> import onnxruntime
    >>> onnxruntime.InferenceSession("model.onnx").run(None, {"X": X})[0]  # doctest: +SKIP
    """
    check_net_and_path(net, path, "export_onnx")
    onnx = _require("onnx", "export_onnx")
    runtime = None if check is None else _require("onnxruntime", "export_onnx(check=...)")
    opset = _check_opset(opset, onnx)
    if not isinstance(labels, bool):
        raise TypeError(f"export_onnx: labels must be True or False, got {labels!r}")
    _check_target(path)
    X = None
    if check is not None:
        with net.backend.context():  # CuPy: onto the network's GPU, not the current one
            X = net.as_input(check, "check")[0]  # checked before any work
    tensors, meta = payload(net)  # host copies, once; custom activations and non-finite weights refused
    model = _model(onnx, net, tensors, meta, opset, labels)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    if X is not None:
        _check_outputs(runtime, net, data, X, labels, path)
    write_bytes(path, data)


def _check_opset(opset: Any, onnx: Any) -> int:
    latest = onnx.defs.onnx_opset_version()
    if opset is None:
        return DEFAULT_OPSET
    whole = isinstance(opset, (int, np.integer)) and not isinstance(opset, bool)
    if not whole or not MIN_OPSET <= opset <= latest:
        raise ValueError(f"export_onnx: opset must be an integer from {MIN_OPSET} to {latest} "
                         f"(onnx {onnx.__version__}), got {opset!r}")
    return int(opset)


def _check_target(path: _Path) -> None:
    try:
        target = os.path.realpath(os.fspath(path))
    except (TypeError, ValueError) as exc:  # a NUL byte in it
        raise ValueError(f"export_onnx: path must be a file path, got {path!r} ({exc})") from None
    if os.path.isdir(target):
        raise error(path, "is a folder; export_onnx needs a file name such as model.onnx")
    check_writable(path)  # the folder exists and takes new files


# ------------------------------------------------------------------ the graph
def _model(onnx: Any, net: Any, tensors: dict[str, np.ndarray], meta: dict, opset: int, labels: bool) -> Any:
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    dtype = np.dtype(net.dtype_name)
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    nodes, inits, a = [], [], INPUT
    for i, layer in enumerate(net.layers):
        inits += [numpy_helper.from_array(tensors[f"W{i}"], f"W{i}"),
                  numpy_helper.from_array(tensors[f"b{i}"], f"b{i}")]
        nodes.append(helper.make_node("Gemm", [a, f"W{i}", f"b{i}"], [f"Z{i}"], name=f"dense{i}", transB=1))
        a = OUTPUT if i == len(net.layers) - 1 else f"A{i}"
        nodes += _activation(onnx, layer.activation.name, i, a, dtype, inits)
    n_in, n_out = net.layer_sizes[0], net.layer_sizes[-1]
    outputs = [helper.make_tensor_value_info(OUTPUT, elem, ["batch", n_out])]
    if labels:
        sigmoid = net.activations[-1] == "sigmoid"
        nodes += _label_nodes(onnx, sigmoid, n_out, dtype, inits)
        shape = ["batch", n_out] if sigmoid and n_out > 1 else ["batch"]
        outputs.append(helper.make_tensor_value_info(LABELS, onnx.TensorProto.INT64, shape))
    graph = helper.make_graph(nodes, "nn_xp", [helper.make_tensor_value_info(INPUT, elem, ["batch", n_in])],
                              outputs, initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="nn_xp",
                              producer_version=meta["nn_xp_version"])
    model.ir_version = helper.find_min_ir_version_for(opsets)  # any runtime that knows the opset loads it
    keep = ("nn_xp_version", "layer_sizes", "activations", "loss", "loss_config", "dtype")  # as trained
    props = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items() if k in keep}
    props["outputs"] = json.dumps([o.name for o in outputs])
    helper.set_model_props(model, props)
    return model


def _activation(onnx: Any, name: str, i: int, a: str, dtype: np.dtype, inits: list) -> list:
    make_node, z = onnx.helper.make_node, f"Z{i}"
    if name in _SIMPLE:
        return [make_node(_SIMPLE[name], [z], [a], name=f"{name}{i}")]
    if name == "softmax":
        return [make_node("Softmax", [z], [a], name=f"softmax{i}", axis=-1)]
    if name == "leaky_relu":  # max(z, slope * z), the slope in the model's dtype
        inits.append(onnx.numpy_helper.from_array(np.asarray(LEAKY_SLOPE, dtype=dtype), f"slope{i}"))
        return [make_node("Mul", [z, f"slope{i}"], [f"S{i}"], name=f"leaky_relu{i}_scale"),
                make_node("Max", [z, f"S{i}"], [a], name=f"leaky_relu{i}")]
    raise ValueError(f"export_onnx: no ONNX form for the activation {name!r}")


def _label_nodes(onnx: Any, sigmoid: bool, n_out: int, dtype: np.dtype, inits: list) -> list:
    make_node, from_array = onnx.helper.make_node, onnx.numpy_helper.from_array
    if not sigmoid:
        return [make_node("ArgMax", [OUTPUT], [LABELS], name="argmax", axis=1, keepdims=0)]  # (m,) int64
    inits.append(from_array(np.asarray(0.5, dtype=dtype), "half"))
    nodes = [make_node("Greater", [OUTPUT, "half"], ["above"], name="threshold"),
             make_node("Cast", ["above"], ["labels_2d" if n_out == 1 else LABELS], name="to_int64",
                       to=onnx.TensorProto.INT64)]
    if n_out == 1:  # (m, 1) -> (m,), as predict_classes gives one column
        inits.append(from_array(np.asarray([1], dtype=np.int64), "column_axis"))
        nodes.append(make_node("Squeeze", ["labels_2d", "column_axis"], [LABELS], name="squeeze"))
    return nodes


# ------------------------------------------------------------------ the check
def _check_outputs(runtime: Any, net: Any, data: bytes, X: Any, labels: bool, path: _Path) -> None:
    """onnxruntime's outputs on ``X`` (a model array) against ``predict`` / ``predict_classes``."""
    options = runtime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not ours to print
    try:
        session = runtime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes, not all exported
        raise ValueError(f"{os.fspath(path)}: not written: onnxruntime {runtime.__version__} cannot load the "
                         f"model: {exc}") from exc
    got = session.run(None, {INPUT: np.ascontiguousarray(backends.to_numpy(X))})
    want = backends.to_numpy(net.predict(X))  # (m, n_out)
    tol = TOLERANCE[net.dtype_name]
    bound = tol * (1.0 + np.abs(want))
    problem = _differs(got[0], want, bound, "Y", "net.predict")
    if problem is None and labels:
        problem = _labels_differ(got[1], backends.to_numpy(net.predict_classes(X)), want, bound,
                                 net.activations[-1] == "sigmoid")
    if problem is not None:
        raise ValueError(f"{os.fspath(path)}: not written: onnxruntime's {problem} (tolerance {tol:g} "
                         f"for {net.dtype_name}); any file already there is unchanged")


def _differs(got: np.ndarray, want: np.ndarray, bound: np.ndarray, name: str, ref: str) -> str | None:
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"{name} is {got.dtype} {got.shape}, {ref}(check) {want.dtype} {want.shape}"
    bad = ~(np.abs(got - want) <= bound)  # NaN counts as bad
    if not bad.any():
        return None
    diff = np.abs(got - want)
    worst = "NaN" if np.isnan(diff).any() else f"{float(diff.max()):.3g}"
    return (f"{name} differs from {ref}(check) in {int(bad.any(axis=1).sum())} of {len(want)} rows, by up "
            f"to {worst} (first at row {int(np.argwhere(bad)[0][0])})")


def _labels_differ(got: np.ndarray, want: np.ndarray, proba: np.ndarray, bound: np.ndarray,
                   sigmoid: bool) -> str | None:
    """Labels equal to predict_classes', except where the reference output is within tolerance of a tie."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"labels are {got.dtype} {got.shape}, net.predict_classes(check) {want.dtype} {want.shape}"
    if sigmoid:
        near = (np.abs(proba - 0.5) <= bound).reshape(want.shape)
    elif np.all((got >= 0) & (got < proba.shape[1])):
        chosen = np.take_along_axis(proba, got.reshape(-1, 1), axis=1)[:, 0]  # predict's value of ONNX's pick
        near = proba.max(axis=1) - chosen <= 2 * bound.max(axis=1)
    else:
        near = np.zeros(want.shape, dtype=bool)
    bad = (got != want) & ~near
    if not bad.any():
        return None
    return f"labels differ from net.predict_classes(check) in {int(bad.sum())} of {want.size} places"


# ------------------------------------------------------------------ the file
# ------------------------------------------------------------------ scikit-learn
def register_skl2onnx() -> None:
    """Let skl2onnx convert :mod:`nn_xp.sklearn`'s ``MLPClassifier`` and ``MLPRegressor``, alone or in a
    ``Pipeline``. Call it once before ``skl2onnx.to_onnx``; calling it again is harmless.

    The classifier goes through skl2onnx's own MLP converter (it reads ``coefs_``,
    ``intercepts_``, ``activation``, ``out_activation_`` and ``classes_``), so it
    has the same outputs (``label``, ``probabilities``) and options (``zipmap``).
    The regressor has a converter of nn_xp's own: skl2onnx's reshapes every output
    to one column, which breaks multi-output regression; here ``variable`` is
    ``(n_samples, n_outputs)``.

    Examples
    --------
    >>> from nn_xp.export import register_skl2onnx
    >>> register_skl2onnx()  # doctest: +SKIP
    >>> onx = skl2onnx.to_onnx(pipeline, X[:1].astype("float32"), options={"zipmap": False})  # doctest: +SKIP
    """
    skl2onnx = _require("skl2onnx", "register_skl2onnx", "sklearn-onnx")
    mlp = _require("skl2onnx.operator_converters.multilayer_perceptron", "register_skl2onnx", "sklearn-onnx")
    shapes = _require("skl2onnx.common.shape_calculator", "register_skl2onnx", "sklearn-onnx")
    from .sklearn import MLPClassifier, MLPRegressor

    def regressor_shape(operator: Any) -> None:
        shapes.calculate_linear_regressor_output_shapes(operator)  # checks the input type, sets [N, 1]
        n = operator.inputs[0].get_first_dimension()
        operator.outputs[0].type.shape = [n, operator.raw_operator.n_outputs_]

    skl2onnx.update_registered_converter(
        MLPClassifier, "NnXpMLPClassifier", shapes.calculate_linear_classifier_output_shapes,
        mlp.convert_sklearn_mlp_classifier,
        options={"zipmap": [True, False, "columns"], "output_class_labels": [False, True],
                 "nocl": [True, False]})
    skl2onnx.update_registered_converter(MLPRegressor, "NnXpMLPRegressor", regressor_shape,
                                         _convert_regressor)


def _convert_regressor(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx converter: the fitted ``network_``'s layers as ``Gemm`` + activation, in the input's float
    type (double for double input, else float)."""
    onnx = _require("onnx", "register_skl2onnx", "sklearn-onnx")
    double = onnx.TensorProto.DOUBLE
    guess = _require("skl2onnx.common.data_types", "register_skl2onnx", "sklearn-onnx").guess_proto_type
    proto = double if guess(operator.inputs[0].type) == double else onnx.TensorProto.FLOAT
    dtype = np.float64 if proto == double else np.float32
    net = operator.raw_operator.network_

    def name(kind: str) -> str:
        return scope.get_unique_variable_name(kind)

    a = name("cast_input")
    container.add_node("Cast", operator.inputs[0].full_name, a, name=scope.get_unique_operator_name("Cast"),
                       to=proto)
    for (W, b), activation in zip(net.get_weights(), net.activations):
        w, c, z = name("coefficient"), name("intercepts"), name("gemm")
        container.add_initializer(w, proto, W.shape, W.astype(dtype).ravel())  # (n_out, n_in)
        container.add_initializer(c, proto, b.shape, b.astype(dtype))
        container.add_node("Gemm", [a, w, c], z, name=scope.get_unique_operator_name("Gemm"), transB=1)
        a = name("activations")
        op = _SIMPLE[activation]  # scikit-learn's activations: identity, logistic, tanh, relu
        container.add_node(op, z, a, name=scope.get_unique_operator_name(op))
    container.add_node("Identity", a, operator.outputs[0].full_name,
                       name=scope.get_unique_operator_name("Identity"))
