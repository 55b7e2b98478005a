"""Issue 16 items 4 and 5: gradient clipping by global norm (clip_norm=), RMSprop, learning-rate warm-up,
ReduceLROnPlateau; on every backend, flat and per-array parameters, every engine, data-parallel, saved."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import SINE_X, SINE_Y, assert_close, assert_on_backend, in_threads, make_net

import nn_xp
from nn_xp import _kernels as K
from nn_xp._payload import saved_optimizer
from nn_xp.backends import to_numpy
from nn_xp.engine import CudaGraphEngine, FlatParameters, Parameters

SHAPES = [(4, 3), (2, 4)]  # (n_out, n_in) per layer: W0 (4, 3), b0 (4,), W1 (2, 4), b1 (2,)
NAMES = ["W0", "b0", "W1", "b1"]


# ------------------------------------------------------------------ references, on the host
def host_arrays(rng, scale=1.0):
    return [rng.standard_normal(s) * scale for n_out, n_in in SHAPES for s in ((n_out, n_in), (n_out,))]


def host_clip(grads, clip_norm):
    """Keras' global_clipnorm, the scale computed on the host."""
    if clip_norm is None:
        return grads
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
    return [g * min(1.0, clip_norm / norm) for g in grads]


def host_step(kind, cfg, params, grads, state, t, lr):
    """One step of ``kind`` on host arrays (the textbook formulas; Keras' for RMSprop); ``state`` by index."""
    grads = host_clip(grads, cfg.get("clip_norm"))
    new = []
    for i, (p, g) in enumerate(zip(params, grads)):
        s = state.setdefault(i, {k: np.zeros_like(p) for k in ("v", "m", "a", "b")})
        wd = cfg.get("weight_decay", 0.0)
        if wd and kind != "adamw":
            g = g + wd * p
        if kind == "sgd":
            s["v"] = cfg.get("momentum", 0.0) * s["v"] + g
            new.append(p - lr * (s["v"] if cfg.get("momentum") else g))
        elif kind in ("adam", "adamw"):
            if kind == "adamw":
                p = p * (1 - lr * wd)
            s["m"] = 0.9 * s["m"] + 0.1 * g
            s["v"] = 0.999 * s["v"] + 0.001 * g * g
            new.append(p - lr * (s["m"] / (1 - 0.9 ** t)) / (np.sqrt(s["v"] / (1 - 0.999 ** t)) + 1e-8))
        else:  # rmsprop, as keras/src/optimizers/rmsprop.py writes it
            rho, eps, mom = cfg.get("rho", 0.9), cfg.get("epsilon", 1e-7), cfg.get("momentum", 0.0)
            s["v"] = rho * s["v"] + (1 - rho) * np.square(g)
            if cfg.get("centered"):
                s["a"] = rho * s["a"] + (1 - rho) * g
                denominator = s["v"] - np.square(s["a"]) + eps
            else:
                denominator = s["v"] + eps
            increment = lr * g / np.sqrt(denominator)
            if mom:
                s["b"] = mom * s["b"] + increment
                increment = s["b"]
            new.append(p - increment)
    return new


OPTIMIZERS = {
    "sgd": lambda **kw: nn_xp.SGD(0.1, **kw),
    "momentum": lambda **kw: nn_xp.SGD(0.1, momentum=0.9, **kw),
    "adam": lambda **kw: nn_xp.Adam(0.05, **kw),
    "adamw": lambda **kw: nn_xp.AdamW(0.05, weight_decay=0.1, **kw),
    "rmsprop": lambda **kw: nn_xp.RMSprop(0.01, **kw),
    "rmsprop_momentum": lambda **kw: nn_xp.RMSprop(0.01, momentum=0.8, **kw),
    "rmsprop_centered": lambda **kw: nn_xp.RMSprop(0.01, centered=True, **kw),
    "rmsprop_all": lambda **kw: nn_xp.RMSprop(0.01, rho=0.8, momentum=0.5, epsilon=1e-3, centered=True,
                                              weight_decay=0.01, **kw),
}


KINDS = {nn_xp.AdamW: "adamw", nn_xp.Adam: "adam", nn_xp.SGD: "sgd", nn_xp.RMSprop: "rmsprop"}


def kind_and_config(opt):
    return KINDS[type(opt)], opt.config()


def device_lists(backend, host_params, host_grads, layout):
    """Parameters and gradients on the backend (copies: the step writes into them), as views of one flat
    buffer each, or one array each."""
    xp, device = backend.xp, backend.device
    if layout == "flat":
        if not K.slices_are_views(xp):
            pytest.skip(f"{backend.name}: no views of a flat buffer")
        flats = [np.concatenate([np.concatenate([w.ravel(), b]) for w, b in zip(h[0::2], h[1::2])])
                 for h in (host_params, host_grads)]
        return [FlatParameters(xp.asarray(f, device=device, copy=True), SHAPES, False, xp) for f in flats]
    return [Parameters([xp.asarray(a, device=device, copy=True) for a in h], xp)
            for h in (host_params, host_grads)]


def run_steps(backend, layout, opt, steps=4, grad_scale=1.0, seed=0):
    """``steps`` steps of ``opt`` on given gradients, on the backend and on the host: (device, host)."""
    rng = np.random.default_rng(seed)
    host = host_arrays(rng)
    kind, cfg = kind_and_config(opt)
    state, device_params = {}, None
    for t in range(1, steps + 1):
        grads = host_arrays(rng, grad_scale)
        if device_params is None:
            device_params, _ = device_lists(backend, host, grads, layout)
        _, device_grads = device_lists(backend, host, grads, layout)
        lr = opt.current_learning_rate()
        opt.step(device_params, device_grads, NAMES, xp=backend.xp)
        host = host_step(kind, cfg, host, grads, state, t, lr)
    return device_params, host


# ------------------------------------------------------------------ clipping
@pytest.mark.parametrize("layout", ["flat", "arrays"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_clipping_equals_the_numpy_reference_on_every_backend(backend, layout, name):
    opt = OPTIMIZERS[name](clip_norm=0.5)  # the gradients' norm is about 5: every step is clipped
    device, host = run_steps(backend, layout, opt, grad_scale=1.0)
    for p, h in zip(device, host):
        assert_close(p, h, backend=backend, rtol=1e-12, atol=1e-14, dtype="float64")
    for slots in opt.state.values():
        for a in slots.values():
            assert_on_backend(a, backend, "float64")


@pytest.mark.parametrize("layout", ["flat", "arrays"])
@pytest.mark.parametrize("name", ["momentum", "adam", "rmsprop_all"])
def test_clipping_below_the_norm_changes_nothing_bit_for_bit(backend, layout, name):
    unclipped, _ = run_steps(backend, layout, OPTIMIZERS[name](), grad_scale=0.01)
    clipped, _ = run_steps(backend, layout, OPTIMIZERS[name](clip_norm=10.0), grad_scale=0.01)
    for a, b in zip(unclipped, clipped):
        assert to_numpy(a).tobytes() == to_numpy(b).tobytes()


def test_the_global_norm_is_one_scale_for_all_parameters():
    """Keras' global_clipnorm: every array is scaled by the same factor (not each by its own norm)."""
    grads = [np.array([[3.0, 0.0]]), np.array([4.0])]  # global norm 5; each array's own norm 3 and 4
    opt = nn_xp.SGD(1.0, clip_norm=1.0)
    params = [np.zeros((1, 2)), np.zeros(1)]
    opt.step(params, [g.copy() for g in grads], ["W0", "b0"])
    np.testing.assert_allclose(params[0], [[-0.6, 0.0]], rtol=1e-15)
    np.testing.assert_allclose(params[1], [-0.8], rtol=1e-15)


def test_a_non_finite_norm_is_a_divergence_not_a_silent_zero_step(backend):
    xp = backend.xp
    big = 1e200  # its square overflows: the norm is infinite although every value is finite
    opt = nn_xp.SGD(0.1, clip_norm=1.0)
    params = Parameters([xp.zeros(2, dtype=xp.float64, device=backend.device)], xp)
    grads = Parameters([xp.asarray(np.array([big, 1.0]), device=backend.device)], xp)
    with warnings.catch_warnings():  # NumPy underneath says "overflow encountered": expected here
        warnings.simplefilter("ignore", RuntimeWarning)
        opt.step(params, grads, ["b0"], xp=xp)
    assert np.isnan(to_numpy(params[0])).all()


class HostClipped(nn_xp.SGD):
    """The reference: SGD whose gradients are clipped by a scale read back and computed on the host."""

    def __init__(self, *args, limit, **kwargs):
        super().__init__(*args, **kwargs)
        self.limit, self.norms = limit, []

    def step(self, params, grads, names=None, *, xp=None):
        norm = math.sqrt(sum(float(np.sum(to_numpy(g) ** 2)) for g in grads))
        self.norms.append(norm)
        scale = min(1.0, self.limit / norm)
        super().step(params, [g * scale for g in grads], names, xp=xp)


@pytest.mark.parametrize("batch_size, clip", [(None, 0.8), (16, 1.9)])  # between the steps' least and most
def test_fit_with_clipping_equals_host_clipping_on_every_engine(backend, batch_size, clip):
    """The default engine (buffered: one flat buffer; compiled JAX: traced in apply) against the portable
    engine with the scale computed on the host."""
    net = make_net(backend, [1, 8, 1], ["tanh", "identity"], seed=3)
    ref = make_net(backend, [1, 8, 1], ["tanh", "identity"], seed=3, engine="portable")
    Y = 3.0 * SINE_Y
    opt, host = nn_xp.SGD(0.2, momentum=0.5, clip_norm=clip), HostClipped(0.2, momentum=0.5, limit=clip)
    h = net.fit(SINE_X, Y, epochs=12, batch_size=batch_size, optimizer=opt)
    h_ref = ref.fit(SINE_X, Y, epochs=12, batch_size=batch_size, optimizer=host)
    assert max(host.norms) > clip > min(host.norms)  # both clipped and unclipped steps
    np.testing.assert_allclose(h["loss"], h_ref["loss"], rtol=1e-11)
    for (W, b), (Wr, br) in zip(net.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(W, Wr, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(b, br, rtol=1e-11, atol=1e-13)


def test_clip_norm_none_adds_no_work_to_a_step(backend, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a fit without clip_norm computed a norm")

    monkeypatch.setattr(K, "sum_of_squares", refuse)
    monkeypatch.setattr(K, "clip_scale", refuse)
    for batch_size in (None, 30):
        for opt in (nn_xp.SGD(0.1), nn_xp.Adam(0.01), nn_xp.RMSprop(0.01, momentum=0.5)):
            make_net(backend, [1, 4, 1]).fit(SINE_X, SINE_Y, epochs=2, batch_size=batch_size, optimizer=opt)


def test_clipping_reads_nothing_back_from_the_device(monkeypatch):
    """As many host reads with clip_norm as without: the scale stays on the device."""
    strict = pytest.importorskip("array_api_strict")
    counts = []
    for clip in (None, 0.01):
        net = nn_xp.Network([1, 8, 1], backend="array_api_strict", device="device1", dtype="float64")
        X = strict.asarray(SINE_X, device=net.device)
        Y = strict.asarray(SINE_Y, device=net.device)
        calls: list[str] = []
        array_type = type(X)
        for name in ("__float__", "__bool__", "__int__", "__index__", "__dlpack__"):
            original = getattr(array_type, name)

            def counted(self, *args, _original=original, _name=name, _calls=calls, **kwargs):
                _calls.append(_name)
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(array_type, name, counted)
        net.fit(X, Y, epochs=3, batch_size=5, optimizer=nn_xp.RMSprop(0.01, clip_norm=clip))  # 60 steps
        monkeypatch.undo()
        counts.append(len(calls))
    assert counts[0] == counts[1] and counts[0] <= 10, counts


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1.0, ValueError), (math.nan, ValueError),
                                        (math.inf, ValueError), ("1", TypeError), (True, TypeError)])
def test_a_bad_clip_norm_is_refused_naming_it(bad, error):
    for cls in (nn_xp.SGD, nn_xp.Adam, nn_xp.AdamW, nn_xp.RMSprop):
        with pytest.raises(error, match="clip_norm"):
            cls(clip_norm=bad)


# ------------------------------------------------------------------ data-parallel
def ranks(size, work):
    results, errors = in_threads(size, work)
    assert errors == [None] * size
    return results


@pytest.mark.parametrize("size", [2, 3])
def test_data_parallel_clipping_sees_the_global_gradient(backend, size):
    """The step runs after the allreduce: clipping the whole batch's gradient is one process's training."""
    if backend.name == "jax":
        pytest.skip("no data-parallel JAX (tests/test_distributed.py)")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(29, 3))
    Y = 3.0 * np.sin(X @ rng.normal(size=(3, 2)))

    def train(comm):
        net = nn_xp.Network([3, 6, 2], "tanh", backend=backend.name, device=backend.device, dtype="float64",
                            seed=0)
        opt = nn_xp.RMSprop(0.01, momentum=0.5, clip_norm=0.3)
        history = net.fit(X, Y, epochs=4, batch_size=7, optimizer=opt, comm=comm)
        return np.concatenate([a.ravel() for pair in net.get_weights() for a in pair]), history["loss"]

    ref_w, ref_loss = train(None)
    for w, loss in ranks(size, train):
        np.testing.assert_allclose(w, ref_w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)


# ------------------------------------------------------------------ RMSprop
@pytest.mark.parametrize("layout", ["flat", "arrays"])
@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n.startswith("rmsprop")])
def test_rmsprop_equals_kerass_formulas(backend, layout, name):
    opt = OPTIMIZERS[name]()
    device, host = run_steps(backend, layout, opt, steps=5)
    for p, h in zip(device, host):
        assert_close(p, h, backend=backend, rtol=1e-12, atol=1e-14, dtype="float64")
    assert set(opt.state) == set(NAMES) and all(set(s) == set(opt.slots) for s in opt.state.values())


@pytest.mark.parametrize("momentum, centered, weight_decay", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                              (0.0, True, 0.0), (0.5, True, 0.01)])
def test_rmsprop_equals_torchs_where_their_semantics_meet(momentum, centered, weight_decay):
    """torch adds eps to the root (ours is inside, as Keras'): with a negligible eps and a constant rate
    (torch's momentum buffer leaves the rate out) the two are the same algorithm."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    p0 = host_arrays(rng)
    tensors = [torch.tensor(p, requires_grad=True) for p in p0]
    reference = torch.optim.RMSprop(tensors, lr=0.01, alpha=0.8, eps=1e-30, momentum=momentum,
                                    centered=centered, weight_decay=weight_decay)
    ours = nn_xp.RMSprop(0.01, rho=0.8, epsilon=1e-30, momentum=momentum, centered=centered,
                         weight_decay=weight_decay)
    params = [p.copy() for p in p0]
    for _ in range(6):
        grads = host_arrays(rng)
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g)
        reference.step()
        ours.step(params, grads, NAMES)
    for p, t in zip(params, tensors):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-13)


def test_rmsprops_epsilon_is_inside_the_square_root():
    """Where epsilon matters the step is Keras' lr * g / sqrt(v + eps), not torch's lr * g / (sqrt(v)+eps)"""
    g, eps, lr = np.array([1e-3]), 1e-4, 0.1
    opt = nn_xp.RMSprop(lr, rho=0.0, epsilon=eps)  # rho 0: v = g**2
    p = np.zeros(1)
    opt.step([p], [g.copy()], ["b0"])
    np.testing.assert_allclose(p, -lr * g / np.sqrt(g * g + eps), rtol=1e-14)
    assert abs(p[0] + lr * g[0] / (abs(g[0]) + eps)) > 1e-3


@pytest.mark.parametrize("batch_size", [None, 16])
def test_rmsprop_fits_alike_on_every_engine(backend, batch_size):
    """The default engine (flat buffered on NumPy, compiled JAX through apply) against the portable one,
    with a warm-up schedule and clipping."""
    histories, weights = [], []
    for engine in ("auto", "portable"):
        net = make_net(backend, [1, 8, 1], ["tanh", "identity"], seed=5, engine=engine)
        opt = nn_xp.RMSprop(nn_xp.Warmup(0.02, steps=10), momentum=0.5, centered=True, clip_norm=0.5)
        histories.append(net.fit(SINE_X, SINE_Y, epochs=8, batch_size=batch_size, optimizer=opt)["loss"])
        weights.append(net.get_weights())
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-11)
    for (W, b), (Wr, br) in zip(*weights):
        np.testing.assert_allclose(W, Wr, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(b, br, rtol=1e-11, atol=1e-13)
    assert histories[0][-1] < histories[0][0]


def test_rmsprop_by_name():
    assert isinstance(nn_xp.optimizers.get_optimizer("rmsprop", None), nn_xp.RMSprop)
    net = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64")
    net.fit(SINE_X, SINE_Y, epochs=2, optimizer="RMSprop", learning_rate=0.01)
    assert type(net.optimizer) is nn_xp.RMSprop and net.optimizer.learning_rate == 0.01
    assert net.optimizer.iterations == 2 and nn_xp.RMSprop().config()["epsilon"] == 1e-7


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rho": 1.0}, ValueError, "rho must be in"), ({"rho": -0.1}, ValueError, "rho"),
    ({"momentum": 1.0}, ValueError, "momentum must be in"), ({"epsilon": 0.0}, ValueError, "epsilon"),
    ({"weight_decay": -1.0}, ValueError, "weight_decay"), ({"centered": 1}, TypeError, "centered"),
    ({"learning_rate": 0.0}, ValueError, "learning_rate")])
def test_bad_rmsprop_arguments_are_refused_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        nn_xp.RMSprop(**kwargs)


# ------------------------------------------------------------------ saved: model files and checkpoints
@pytest.mark.parametrize("batch_size", [None, 20])
def test_resume_is_bit_identical_with_rmsprop_and_clipping(backend, tmp_path, batch_size):
    path = tmp_path / "ck.safetensors"

    def opt():
        return nn_xp.RMSprop(0.01, momentum=0.5, centered=True, clip_norm=0.2)

    full = make_net(backend, [1, 6, 1], "tanh", seed=11)
    h_full = full.fit(SINE_X, SINE_Y, epochs=6, batch_size=batch_size, optimizer=opt())
    make_net(backend, [1, 6, 1], "tanh", seed=11).fit(SINE_X, SINE_Y, epochs=3, batch_size=batch_size,
                                                       optimizer=opt(), checkpoint=path)
    resumed = make_net(backend, [1, 6, 1], "tanh", seed=11)
    h = resumed.fit(SINE_X, SINE_Y, epochs=6, batch_size=batch_size, resume_from=path)  # the file's own
    assert resumed.optimizer.config() == opt().config()
    assert resumed.optimizer.iterations == full.optimizer.iterations
    assert h.history == h_full.history
    for (W, b), (Wf, bf) in zip(resumed.get_weights(), full.get_weights()):
        assert W.tobytes() == Wf.tobytes() and b.tobytes() == bf.tobytes()


def test_model_files_keep_rmsprop_and_clip_norm(tmp_path):
    path = tmp_path / "m.safetensors"
    net = nn_xp.Network([1, 5, 1], backend="numpy", dtype="float64", seed=1)
    net.fit(SINE_X, SINE_Y, epochs=3, optimizer=nn_xp.RMSprop(0.01, momentum=0.5, clip_norm=0.3))
    nn_xp.save(net, path)
    loaded = nn_xp.load(path, backend="numpy")
    assert type(loaded.optimizer) is nn_xp.RMSprop and loaded.optimizer.config() == net.optimizer.config()
    assert loaded.optimizer.clip_norm == 0.3 and loaded.optimizer.slots == ("velocity", "momentum")
    net.fit(SINE_X, SINE_Y, epochs=2)
    loaded.fit(SINE_X, SINE_Y, epochs=2)
    for (W, b), (Wl, bl) in zip(net.get_weights(), loaded.get_weights()):
        assert W.tobytes() == Wl.tobytes() and b.tobytes() == bl.tobytes()


def test_a_file_written_before_clip_norm_existed_loads_without_clipping():
    config = {"learning_rate": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}  # no clip_norm
    old = {"optimizer": {"name": "sgd", "iterations": 0, "config": config}}
    opt = saved_optimizer("old.safetensors", old)
    assert type(opt) is nn_xp.SGD and opt.clip_norm is None and opt.momentum == 0.9


# ------------------------------------------------------------------ warm-up
def keras_cosine_with_warmup(step, initial_learning_rate, decay_steps, alpha, warmup_target, warmup_steps):
    """keras/src/optimizers/schedules/learning_rate_schedule.py CosineDecay, on the host."""
    step = min(step, decay_steps + warmup_steps)
    if step < warmup_steps:
        return (warmup_target - initial_learning_rate) * (step / warmup_steps) + initial_learning_rate
    cosine = 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / decay_steps))
    return warmup_target * ((1 - alpha) * cosine + alpha)


def test_cosine_warmup_is_kerass():
    lr = nn_xp.CosineDecay(0.1, decay_steps=50, alpha=0.1, warmup_steps=10, warmup_start=0.01)
    for step in range(0, 80, 3):
        expected = keras_cosine_with_warmup(step, 0.01, 50, 0.1, 0.1, 10)
        assert lr(step) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("schedule, decay", [
    (lambda **w: nn_xp.StepDecay(0.5, drop=0.5, every=4, **w), lambda s: 0.5 * 0.5 ** (s // 4)),
    (lambda **w: nn_xp.ExponentialDecay(0.5, rate=0.9, decay_steps=3, **w), lambda s: 0.5 * 0.9 ** (s / 3)),
    (lambda **w: nn_xp.CosineDecay(0.5, decay_steps=8, **w),
     lambda s: 0.5 * 0.5 * (1 + math.cos(math.pi * min(s, 8) / 8)))])
def test_every_decay_warms_up_linearly_then_decays_from_its_start(schedule, decay):
    plain, warm = schedule(), schedule(warmup_steps=5, warmup_start=0.1)
    assert [plain(s) for s in range(20)] == pytest.approx([decay(s) for s in range(20)], rel=1e-14)
    line = [0.1 + (0.5 - 0.1) * s / 5 for s in range(5)]
    assert [warm(s) for s in range(5)] == pytest.approx(line, rel=1e-14)
    assert [warm(s) for s in range(5, 25)] == [plain(s) for s in range(20)]
    assert schedule(warmup_steps=4)(0) == 0.0 and "warmup_steps=5" in repr(warm)


def test_warmup_wraps_a_rate_or_a_schedule():
    constant = nn_xp.Warmup(0.2, steps=4)
    assert [constant(s) for s in range(7)] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2], rel=1e-14)
    decay = nn_xp.StepDecay(0.4, drop=0.5, every=2)
    wrapped = nn_xp.Warmup(decay, steps=2, start=0.2)
    assert [wrapped(s) for s in range(6)] == pytest.approx([0.2, 0.3, 0.4, 0.4, 0.2, 0.2], rel=1e-14)
    opt = nn_xp.SGD(wrapped)
    assert opt.learning_rates(6) == [wrapped(s) for s in range(6)]


@pytest.mark.parametrize("make, match", [
    (lambda: nn_xp.Warmup(0.1, steps=0), "steps"), (lambda: nn_xp.Warmup(0.1, steps=2.5), "steps"),
    (lambda: nn_xp.Warmup(-0.1, steps=2), "learning_rate"), (lambda: nn_xp.Warmup(0.1, 2, start=-1), "start"),
    (lambda: nn_xp.CosineDecay(0.1, 10, warmup_steps=-1), "warmup_steps"),
    (lambda: nn_xp.StepDecay(0.1, warmup_start=math.nan), "warmup_start")])
def test_bad_warmups_are_refused_naming_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_a_warmup_drives_the_steps_of_a_fit(backend):
    """With a warm-up from 0, the first step changes nothing, and each later step is SGD at its rate."""
    net = make_net(backend, [1, 4, 1], seed=2)
    before = net.get_weights()
    net.fit(SINE_X, SINE_Y, epochs=1, optimizer=nn_xp.SGD(nn_xp.Warmup(0.1, steps=3)))
    for (W, b), (W0, b0) in zip(net.get_weights(), before):
        assert W.tobytes() == W0.tobytes() and b.tobytes() == b0.tobytes()
    ref = make_net(backend, [1, 4, 1], seed=2)
    net.fit(SINE_X, SINE_Y, epochs=3)  # the same optimizer: steps 1, 2, 3 at 0.1/3, 0.2/3, 0.1
    for rate in (0.1 / 3, 0.2 / 3, 0.1):
        ref.fit(SINE_X, SINE_Y, epochs=1, optimizer=nn_xp.SGD(rate))
    for (W, b), (Wr, br) in zip(net.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(W, Wr, rtol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-12)


# ------------------------------------------------------------------ ReduceLROnPlateau
class _Net:
    def __init__(self, optimizer):
        self.optimizer = optimizer


def scripted(callback, values, rate=1.0, monitor="val_loss"):
    """The rate after each epoch of ``values`` (a scripted history of ``monitor``), and the logs seen."""
    opt = nn_xp.SGD(rate)
    callback.on_train_begin(_Net(opt))
    rates, logs_seen = [], []
    for epoch, value in enumerate(values):
        logs = {monitor: value}
        callback.on_epoch_end(epoch, logs)
        rates.append(opt.learning_rate)
        logs_seen.append(logs)
    return rates, logs_seen


def test_plateau_waits_patience_epochs_then_reduces():
    cb = nn_xp.ReduceLROnPlateau(factor=0.5, patience=2)
    # best 1.0 at epoch 0; 1.0 and 0.99995 are no improvement (min_delta 1e-4): reduce after epoch 2;
    # 0.5 improves (epoch 3); 0.6, 0.7 wait: reduce after epoch 5; 0.4 improves; 0.45, 0.41: after epoch 8
    rates, logs = scripted(cb, [1.0, 1.0, 0.99995, 0.5, 0.6, 0.7, 0.4, 0.45, 0.41])
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    assert [entry["learning_rate"] for entry in logs] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert cb.reductions == [(2, 0.5), (5, 0.25), (8, 0.125)] and cb.wait == 0


def test_plateau_cooldown_and_min_lr():
    cb = nn_xp.ReduceLROnPlateau(factor=0.1, patience=1, cooldown=2, min_lr=0.005)
    # never improves after epoch 0: reduce after epoch 1; epoch 2 is cooldown; epoch 3 ends it and counts
    # (Keras decrements the counter before it looks: cooldown=n leaves n - 1 epochs out), so it reduces
    # again, and so does epoch 5, to max(0.01 * 0.1, 0.005); from then on the rate is min_lr
    rates, _ = scripted(cb, [1.0] * 9)
    assert rates == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005], rel=1e-15)
    assert [e for e, _ in cb.reductions] == [1, 3, 5] and cb.reductions[-1][1] == 0.005 and cb.wait == 2


def test_plateau_modes():
    up = nn_xp.ReduceLROnPlateau("val_accuracy", factor=0.5, patience=1, min_delta=0.0)  # auto: maximise
    rates, _ = scripted(up, [0.5, 0.6, 0.6, 0.7], monitor="val_accuracy")
    assert rates == [1.0, 1.0, 0.5, 0.5]
    down = nn_xp.ReduceLROnPlateau("loss", factor=0.5, patience=1, mode="max", min_delta=0.0)
    rates, _ = scripted(down, [3.0, 2.0, 4.0, 1.0], monitor="loss")
    assert rates == [1.0, 0.5, 0.5, 0.25]


def test_plateau_state_is_per_fit():
    cb = nn_xp.ReduceLROnPlateau(factor=0.5, patience=2)
    scripted(cb, [1.0, 2.0])
    assert cb.wait == 1 and cb.best == 1.0
    rates, _ = scripted(cb, [5.0, 5.0, 5.0])  # a new fit: 5.0 is its first best, not a plateau of 1.0
    assert rates == [1.0, 1.0, 0.5] and cb.reductions == [(2, 0.5)]


def test_plateau_refuses_a_schedule_and_a_missing_key():
    cb = nn_xp.ReduceLROnPlateau()
    net = nn_xp.Network([1, 4, 1], backend="numpy")
    with pytest.raises(ValueError, match="ReduceLROnPlateau sets the learning rate, and this fit's SGD "
                                         "follows the schedule StepDecay"):
        net.fit(SINE_X, SINE_Y, epochs=2, optimizer=nn_xp.SGD(nn_xp.StepDecay(0.1)), callbacks=cb)
    with pytest.raises(ValueError, match="monitors 'val_loss', but the history has only \\['loss'\\]"):
        net.fit(SINE_X, SINE_Y, epochs=2, callbacks=cb)


@pytest.mark.parametrize("kwargs, match", [
    ({"factor": 1.0}, "factor must be in"), ({"factor": 0.0}, "factor"), ({"patience": -1}, "patience"),
    ({"patience": 1.5}, "patience"), ({"cooldown": -1}, "cooldown"), ({"min_lr": -1.0}, "min_lr"),
    ({"min_delta": -1.0}, "min_delta"), ({"mode": "up"}, "mode"), ({"verbose": 2}, "verbose"),
    ({"monitor": 3}, "monitor")])
def test_bad_plateau_arguments_are_refused_naming_them(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        nn_xp.ReduceLROnPlateau(**kwargs)


SCRIPT = [1.0, 0.9, 0.95, 0.97, 0.99, 0.5, 0.6, 0.7, 0.8, 0.9]  # a scripted "score" per epoch


def _plateau_fit(net, epochs=10, **fit):
    """A fit whose monitored value is scripted (a callback before the plateau writes it into the logs)."""
    seen = []
    callbacks = [lambda epoch, logs: logs.update(score=SCRIPT[epoch]),
                 nn_xp.ReduceLROnPlateau("score", factor=0.5, patience=2, cooldown=1, min_lr=0.02),
                 lambda epoch, logs: seen.append(logs["learning_rate"])]
    opt = nn_xp.SGD(0.1, momentum=0.5)
    net.fit(SINE_X, SINE_Y, epochs=epochs, optimizer=opt, callbacks=callbacks, **fit)
    return seen, callbacks[1]


# patience 2, cooldown 1 (which, as in Keras, leaves no epoch out): best 0.9 at epoch 1; epochs 2, 3 wait:
# reduce after 3 (to 0.05); 4 waits; 0.5 improves (5); 6, 7 wait: reduce after 7 (0.025); 8, 9 wait: to min_lr
RATES = [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025]  # the rates the epochs trained with


@pytest.mark.parametrize("batch_size", [None, 25])
def test_a_reduced_rate_reaches_the_next_epoch_on_every_engine(backend, batch_size):
    net = make_net(backend, [1, 6, 1], seed=4)
    seen, plateau = _plateau_fit(net, batch_size=batch_size)
    assert seen == RATES and plateau.reductions == [(3, 0.05), (7, 0.025), (9, 0.02)]
    ref = make_net(backend, [1, 6, 1], seed=4)
    opt = nn_xp.SGD(0.1, momentum=0.5)
    for rate in RATES:  # epoch by epoch, the same optimizer (its momentum kept) at the expected rate
        opt.set_learning_rate(rate)
        ref.fit(SINE_X, SINE_Y, epochs=1, batch_size=batch_size, optimizer=opt)
    for (W, b), (Wr, br) in zip(net.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(W, Wr, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b, br, rtol=1e-12, atol=1e-14)
    assert net.optimizer.learning_rate == 0.02  # the network keeps the reduced rate for the next fit


class EagerReplay:
    """tests/test_cuda_graph.py's stand-in for CuPy's capture: a replay runs the epoch's code again."""

    def __init__(self):
        self.captures = 0

    def __call__(self, fn):
        self.captures += 1
        return fn


def _graph_net(seed):
    net = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=seed)
    capture = EagerReplay()
    net.engine = CudaGraphEngine(net.backend, net.dtype, capture=capture)
    net.set_weights(net.get_weights())  # laid out by the graph engine
    return net, capture


def test_cuda_graph_epochs_clip_and_are_captured_again_when_the_rate_drops():
    net, capture = _graph_net(4)
    ref = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=4)
    seen, _ = _plateau_fit(net)
    seen_ref, _ = _plateau_fit(ref)
    assert seen == seen_ref == RATES and capture.captures == 3  # after the first epoch, and at each reduction
    for (W, b), (Wr, br) in zip(net.get_weights(), ref.get_weights()):
        assert W.tobytes() == Wr.tobytes() and b.tobytes() == br.tobytes()
    net, capture = _graph_net(4)
    ref = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=4)
    for model in (net, ref):
        model.fit(SINE_X, 3 * SINE_Y, epochs=20, optimizer=nn_xp.SGD(0.3, momentum=0.5, clip_norm=0.1))
    for (W, b), (Wr, br) in zip(net.get_weights(), ref.get_weights()):
        assert W.tobytes() == Wr.tobytes() and b.tobytes() == br.tobytes()
    assert capture.captures == 1


def test_a_resumed_fit_continues_at_the_reduced_rate(tmp_path):
    path = tmp_path / "ck.safetensors"
    net = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=4)
    _plateau_fit(net, epochs=6, checkpoint=path)
    resumed = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=4)
    resumed.fit(SINE_X, SINE_Y, epochs=7, resume_from=path)  # no optimizer given: the checkpoint's
    assert resumed.optimizer.learning_rate == RATES[5] and resumed.optimizer.iterations == 7


def test_plateau_says_when_it_reduces(capsys):
    net = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64")
    cb = nn_xp.ReduceLROnPlateau("loss", factor=0.5, patience=0, mode="max", verbose=1)
    net.fit(SINE_X, SINE_Y, epochs=3, callbacks=cb)
    err = capsys.readouterr().err
    assert "Epoch 2: ReduceLROnPlateau reducing learning rate to 0.05." in err
    assert "Epoch 3: ReduceLROnPlateau reducing learning rate to 0.025." in err
