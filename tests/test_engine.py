"""The engine: chosen in one place, the same numbers portable or buffered, a gradient hook, epochs in chunks,
and the public pieces (snapshots, optimizer steps, undo points, the fit in progress) a user's code can use."""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import SINE_X, SINE_Y, assert_on_backend, make_net

import nn_xp
from nn_xp.engine import BufferedEngine, FlatParameters, Parameters, PortableEngine


def _model_data(net, X, Y):
    return net.backend.asarray(X, dtype=net.dtype), net.backend.asarray(Y, dtype=net.dtype)


# ------------------------------------------------------------------ choosing the engine
def test_auto_is_buffered_exactly_where_the_library_takes_out(backend):
    net = make_net(backend, [1, 4, 1])
    expected = {"numpy": "buffered", "cupy": "buffered", "jax": "compiled",
                "torch": "fused"}.get(backend.name, "portable")
    assert net.engine.name == expected
    # one flat buffer where fit writes into buffers, and on torch, whose portable undo point is then one copy
    assert (net.parameters.flat is not None) == (expected in ("buffered", "fused"))
    assert nn_xp.Network([1, 4, 1], backend=backend.name, device=backend.device,
                         engine="portable").engine.name == "portable"


def test_unknown_engine_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown engine 'fast'; valid names: auto, portable, buffered"):
        nn_xp.Network([1, 4, 1], backend="numpy", engine="fast")


def test_buffered_engine_on_a_library_without_out_is_a_clear_error():
    pytest.importorskip("array_api_strict")
    with pytest.raises(ValueError, match="engine='buffered' writes into out= buffers.*array_api_strict"):
        nn_xp.Network([1, 4, 1], backend="array_api_strict", engine="buffered")


def test_to_chooses_the_engine_again_and_fails_whole():
    pytest.importorskip("array_api_strict")
    net = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64")
    weights = net.get_weights()
    net.to("array_api_strict")
    assert net.engine.name == "portable" and net.parameters.flat is None
    net.to("numpy")
    assert net.engine.name == "buffered" and net.parameters.flat is not None
    pinned = nn_xp.Network([1, 4, 1], backend="numpy", dtype="float64", engine="buffered")
    with pytest.raises(ValueError, match="engine='buffered'"):
        pinned.to("array_api_strict")
    assert pinned.engine.name == "buffered" and pinned.backend.name == "numpy"  # all or nothing
    pinned.fit(SINE_X, SINE_Y, epochs=2)
    for (W, b), (Wn, bn) in zip(net.get_weights(), weights):  # moved there and back, exactly
        np.testing.assert_array_equal(W, Wn)
        np.testing.assert_array_equal(b, bn)


# ------------------------------------------------------------------ the same numbers
@pytest.mark.parametrize("head", [("identity", "mse", 2), ("sigmoid", "binary_cross_entropy", 2),
                                  ("softmax", "cross_entropy", 3)], ids=lambda h: h[1])
@pytest.mark.parametrize("batch_size", [None, 7])
@pytest.mark.parametrize("optimizer", [nn_xp.SGD(0.05, momentum=0.9, nesterov=True),
                                       nn_xp.AdamW(0.01, weight_decay=0.1)], ids=["nesterov", "adamw"])
def test_buffered_and_portable_engines_agree_over_losses_and_validation(head, batch_size, optimizer):
    """Every metric of the history (accuracy and validation included) and the weights, float64, rtol 1e-13."""
    out, loss, n_out = head
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 3))
    Y = (X[:, :n_out] > 0).astype(float) if loss != "cross_entropy" else np.argmax(X, axis=1)
    runs = []
    for engine in ("buffered", "portable"):
        net = nn_xp.Network([3, 6, 5, n_out], ["tanh", "relu", out], loss=loss, backend="numpy",
                            dtype="float64", seed=2, engine=engine)
        opt = type(optimizer)(**optimizer.config())
        history = net.fit(X, Y, epochs=5, batch_size=batch_size, optimizer=opt, validation_split=0.2)
        runs.append((net, history))
    (fast, h_fast), (portable, h_portable) = runs
    accuracy = {"accuracy", "val_accuracy"} if loss != "mse" else set()
    assert set(h_fast.history) == {"loss", "val_loss"} | accuracy
    for key in h_fast.history:
        np.testing.assert_allclose(h_fast[key], h_portable[key], rtol=1e-13, err_msg=key)
    for (W, b), (Wp, bp) in zip(fast.get_weights(), portable.get_weights()):
        np.testing.assert_allclose(W, Wp, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(b, bp, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------ the gradient hook
def test_the_gradient_hook_sits_between_back_propagation_and_the_step(backend):
    """A hook doubling the gradients in place is plain SGD at twice the rate; it sees the engine's own."""
    if backend.name == "jax":
        pytest.skip("immutable arrays: the compiled engine traces a pure hook once (tests/test_jax.py)")
    net = make_net(backend, [2, 5, 1], ["tanh", "identity"], seed=1)
    rng = np.random.default_rng(0)
    X, Y = _model_data(net, rng.standard_normal((16, 2)), rng.standard_normal((16, 1)))
    seen = []

    def double(grads):
        seen.append(grads)
        for g in grads:
            g *= 2.0

    trainer = net.engine.trainer(net, nn_xp.SGD(0.05), X, Y, gradient_hook=double)
    rows = trainer.run(3)
    assert len(seen) == 3 and all(isinstance(g, Parameters) for g in seen)
    assert (seen[0].flat is not None) == (net.engine.name == "buffered")  # one buffer: one allreduce
    assert trainer.keys == ["loss"] and [len(r) for r in rows] == [1, 1, 1]
    assert_on_backend(rows[0][0], backend, "float64")  # device scalars: the loop, not the engine, reads them
    reference = make_net(backend, [2, 5, 1], ["tanh", "identity"], seed=1)
    reference.fit(X, Y, epochs=3, learning_rate=0.1)
    for (W, b), (Wr, br) in zip(net.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(W, Wr, rtol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ epochs in chunks
def _chunked(net, chunk: int | None, calls: list) -> None:
    """Give ``net`` an engine whose trainers run ``chunk`` epochs per call (None: their own choice), and
    record the epochs of each call in ``calls``."""
    base = type(net.engine)

    class Chunked(base):
        def trainer(self, *args, **kwargs):
            trainer = super().trainer(*args, **kwargs)
            trainer.chunk = trainer.chunk if chunk is None else chunk
            run = trainer.run

            def counted(epochs):
                calls.append(epochs)
                return run(epochs)

            trainer.run = counted
            return trainer

    net.engine = Chunked(net.backend, net.dtype)
    net.set_weights(net.get_weights())  # laid out by the new engine


@pytest.mark.parametrize("batch_size", [None, 16])
def test_the_loop_runs_an_engine_that_trains_several_epochs_per_call(backend, batch_size):
    net = make_net(backend, [1, 8, 1], seed=4)
    calls, epochs_seen = [], []
    _chunked(net, 3, calls)
    history = net.fit(SINE_X, SINE_Y, epochs=7, batch_size=batch_size, optimizer="adam", learning_rate=0.01)
    assert calls == [3, 3, 1] and history.epoch == list(range(7))
    reference = make_net(backend, [1, 8, 1], seed=4)
    ref_history = reference.fit(SINE_X, SINE_Y, epochs=7, batch_size=batch_size, optimizer="adam",
                                learning_rate=0.01)
    np.testing.assert_allclose(history["loss"], ref_history["loss"], rtol=1e-13)
    for (W, b), (Wr, br) in zip(net.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(W, Wr, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(b, br, rtol=1e-13, atol=1e-15)
    net.fit(SINE_X, SINE_Y, epochs=2, callbacks=lambda epoch, logs: epochs_seen.append(epoch))
    assert calls[3:] == [1, 1] and epochs_seen == [0, 1]  # a callback reads the host after every epoch


def _same_training(net, reference) -> None:
    assert net.history.epoch == reference.history.epoch
    assert net.history.history == reference.history.history
    for (W, b), (Wr, br) in zip(net.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(W, Wr)
        np.testing.assert_array_equal(b, br)
    assert net.optimizer.iterations == reference.optimizer.iterations


def _every_epoch(epoch, logs) -> None:
    """A callback: the loop then runs one epoch per call (it reads the host after each)."""


@pytest.mark.parametrize("batch_size", [None, 16])
def test_short_epochs_run_several_per_call_and_train_exactly_as_one_per_call(backend, batch_size):
    """The blog's network's epochs are a few times the loop's own cost per call (the undo point, the read of
    the metrics): an eager trainer runs several per call, with one read, and nothing else changes."""
    net, reference = make_net(backend, [1, 8, 1], seed=4), make_net(backend, [1, 8, 1], seed=4)
    calls = []
    _chunked(net, None, calls)
    net.fit(SINE_X, SINE_Y, epochs=40, batch_size=batch_size, optimizer="adam", learning_rate=0.01)
    assert len(calls) < 40 and sum(calls) == 40
    reference.fit(SINE_X, SINE_Y, epochs=40, batch_size=batch_size, optimizer="adam", learning_rate=0.01,
                  callbacks=_every_epoch)
    _same_training(net, reference)
    assert net.rng.random() == reference.rng.random()  # the same shuffles drawn


def test_an_eager_call_runs_epochs_enough_to_share_out_the_loops_cost():
    chunk = nn_xp.engine.eager_epochs_per_call
    layers = nn_xp.Network([1, 20, 1]).layers
    blog = chunk(layers, 100, 1, "float32", np)
    assert 16 <= blog <= nn_xp.engine.portable.MAX_EAGER_CHUNK  # the sine example: tens a call
    assert chunk(layers, 100, 32, "float32", np) < blog / 8  # 32 steps an epoch: each epoch 32 times as long
    assert chunk(nn_xp.Network([64, 64, 64, 10]).layers, 4096, 1, "float32", np) <= 2  # ~1 ms epochs
    assert chunk(nn_xp.Network([64, 256, 256, 10]).layers, 4096, 1, "float32", np) == 1
    assert chunk(nn_xp.Network([784, 1024, 1024, 10]).layers, 8192, 1, "float64", np) == 1


@pytest.mark.parametrize("chunk", [4, 5], ids=["first-of-a-call", "inside-a-call"])
def test_a_divergence_inside_a_call_rolls_back_exactly_as_one_epoch_per_call(backend, chunk):
    """Back to the start of the last epoch with a finite loss (epoch 3 here; epoch 4's is not): the latest
    call's start at or before it, then the epochs from there run again (they repeat bit for bit)."""
    nets = []
    for per_call in (chunk, 1):
        net = make_net(backend, [1, 16, 1], ["relu", "identity"], seed=1)
        _chunked(net, per_call, [])
        with pytest.raises(FloatingPointError, match="rolled back to the start of epoch"):
            net.fit(SINE_X * 100, SINE_Y * 100, epochs=200, learning_rate=5.0)
        nets.append(net)
    chunked, reference = nets
    assert len(reference.history) % chunk != 0  # not a call's start: the replay is needed
    _same_training(chunked, reference)
    assert math.isfinite(chunked.loss(SINE_X * 100, SINE_Y * 100))


@pytest.mark.parametrize("batch_size", [None, 25])
def test_an_error_inside_a_call_keeps_the_epochs_it_completed(backend, batch_size):
    """Ctrl-C (or any error) in epoch 7, inside the call of epochs 5 to 9: the network at the end of epoch 6,
    never part-way through 7, and the history up to 6, as with one epoch per call."""
    if backend.name == "jax":
        pytest.skip("a compiled call is all or nothing (tests/test_jax.py: the last whole call)")
    steps = 1 if batch_size is None else 4

    def schedule(step):
        if step == 7 * steps + steps // 2:  # in epoch 7 (half-way through its batches)
            raise KeyboardInterrupt
        return 0.05

    net, reference = make_net(backend, [1, 8, 1], seed=2), make_net(backend, [1, 8, 1], seed=2)
    calls = []
    _chunked(net, 5, calls)
    with pytest.raises(KeyboardInterrupt):
        net.fit(SINE_X, SINE_Y, epochs=20, batch_size=batch_size, optimizer=nn_xp.SGD(schedule, momentum=0.5))
    assert calls[:2] == [5, 5]
    reference.fit(SINE_X, SINE_Y, epochs=7, batch_size=batch_size, optimizer=nn_xp.SGD(0.05, momentum=0.5))
    _same_training(net, reference)
    assert net.rng.random() == reference.rng.random()


def test_ctrl_c_before_a_call_starts_keeps_none_of_the_last_calls_rows_again(monkeypatch):
    """Ctrl-C between the undo point and the trainer's first line (here: entering torch.no_grad): the rows
    the trainer still holds are the last call's, recorded already, not this one's."""
    pytest.importorskip("torch")
    from nn_xp import _kernels

    class InterruptedThirdTime:
        entered = 0

        def __enter__(self):
            InterruptedThirdTime.entered += 1
            if InterruptedThirdTime.entered == 3:
                raise KeyboardInterrupt

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(_kernels, "autograd_off", lambda xp: InterruptedThirdTime())
    net = nn_xp.Network([1, 20, 1], backend="torch", dtype="float64", seed=0)
    assert net.engine.name == "fused"
    with pytest.raises(KeyboardInterrupt):
        net.fit(SINE_X, SINE_Y, epochs=1000)
    monkeypatch.undo()
    chunk = nn_xp.engine.eager_epochs_per_call(net.layers, SINE_X.shape[0], 1, net.dtype, net.xp)
    assert len(net.history) == 2 * chunk == net.optimizer.iterations  # the two calls before it
    reference = nn_xp.Network([1, 20, 1], backend="torch", dtype="float64", seed=0)
    reference.fit(SINE_X, SINE_Y, epochs=2 * chunk)
    _same_training(net, reference)


def test_a_replay_that_does_not_repeat_leaves_the_network_at_its_undo_point(backend):
    """A schedule that gives another rate for a step it has seen: the epochs run again to roll back differ
    from the first time, so the network stays at the undo point (with a warning), history and all."""
    if backend.name == "jax":
        pytest.skip("a compiled call is all or nothing (tests/test_jax.py: the last whole call)")
    seen = set()

    def schedule(step):
        if step == 7:
            raise KeyboardInterrupt  # inside the call of epochs 5 to 9: back to 5, replay 5 and 6 to reach 7
        rate = 0.05 if step not in seen else 0.06
        seen.add(step)
        return rate

    net, reference = make_net(backend, [1, 8, 1], seed=2), make_net(backend, [1, 8, 1], seed=2)
    _chunked(net, 5, [])
    with pytest.raises(KeyboardInterrupt), pytest.warns(RuntimeWarning, match="gave other metrics"):
        net.fit(SINE_X, SINE_Y, epochs=20, optimizer=nn_xp.SGD(schedule))
    reference.fit(SINE_X, SINE_Y, epochs=5, learning_rate=0.05)
    _same_training(net, reference)


def test_a_checkpoint_is_mended_when_the_replay_of_a_roll_back_is_interrupted(tmp_path):
    """Epoch 4's loss is not finite, so the checkpoint written at 4 holds weights that never had a finite
    loss; the roll-back to 3 replays epochs 0 to 2, and Ctrl-C in that replay leaves the network at 0: the
    checkpoint is rewritten from there, never left holding those weights."""
    path = tmp_path / "ck.safetensors"
    seen = []

    def schedule(step):
        seen.append(step)
        if seen.count(1) == 2:  # step 1 again: inside the replay
            raise KeyboardInterrupt
        return 5.0

    net = nn_xp.Network([1, 16, 1], ["relu", "identity"], backend="numpy", dtype="float64", seed=1)
    start = net.get_weights()
    _chunked(net, 4, [])
    with pytest.raises(KeyboardInterrupt):
        net.fit(SINE_X * 100, SINE_Y * 100, epochs=200, optimizer=nn_xp.SGD(schedule), checkpoint=path,
                checkpoint_every=4)
    assert len(net.history) == 0 and net.optimizer is None  # no epoch completed: the network's (none)
    for (W, b), (W0, b0) in zip(net.get_weights(), start):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    saved = nn_xp.Network([1, 16, 1], ["relu", "identity"], backend="numpy", dtype="float64")
    epoch, history = nn_xp.load_checkpoint(path, saved, nn_xp.SGD(5.0))  # a schedule: given again
    assert epoch == 0 and len(history) == 0
    for (W, b), (W0, b0) in zip(saved.get_weights(), start):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


def test_a_checkpoint_is_written_when_a_chunk_crosses_its_epoch(tmp_path):
    path = tmp_path / "ck.safetensors"
    net = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=2)
    _chunked(net, 3, [])
    net.fit(SINE_X, SINE_Y, epochs=6, checkpoint=path, checkpoint_every=4)  # chunks end at 3, 6
    fresh = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64")
    epoch, history = nn_xp.load_checkpoint(path, fresh, None)
    assert epoch == 6 and len(history) == 6


# ------------------------------------------------------------------ public snapshots and the fit in progress
def test_snapshot_and_restore_are_device_copies_that_keep_the_parameters_live(backend):
    net = make_net(backend, [2, 5, 1], seed=3)
    X = np.random.default_rng(1).standard_normal((12, 2))
    before, held = net.get_weights(), net.params["W0"]
    saved = net.snapshot()
    assert_on_backend(saved.arrays[0], backend, "float64")
    net.fit(X, X[:, :1], epochs=3, learning_rate=0.1)
    net.restore(saved)
    assert net.params["W0"] is held  # in place: what the user holds stays the live parameter
    for (W, b), (W0, b0) in zip(net.get_weights(), before):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    kept = saved.copy()
    net.fit(X, X[:, :1], epochs=2, learning_rate=0.1)
    if backend.name != "jax":  # JAX's arrays are immutable: a snapshot holds references, nothing to reuse
        assert saved.writeable and net.snapshot(into=saved) is saved  # its buffers reused: no new allocation
    net.restore(kept)
    np.testing.assert_array_equal(net.get_weights()[0][0], before[0][0])


def test_a_users_own_best_weights_callback_needs_no_private_attribute():
    """What EarlyStopping does, from the public API: ``self.run.weights_for(key)`` and ``net.restore``."""

    class KeepBest(nn_xp.Callback):
        def on_train_begin(self, net):
            self.best, self.weights = math.inf, None

        def on_epoch_end(self, epoch, logs):
            if logs["loss"] < self.best:
                self.best, self.weights = logs["loss"], self.run.weights_for("loss")

        def on_train_end(self, net):
            net.restore(self.weights)

    net = nn_xp.Network([1, 8, 1], "tanh", backend="numpy", dtype="float64", seed=0)
    keep = KeepBest()
    history = net.fit(SINE_X, SINE_Y, epochs=60, learning_rate=3.0, callbacks=keep, on_nonfinite="warn")
    assert keep.best == min(history["loss"]) and keep.best < history["loss"][-1]  # the rate overshoots
    assert net.loss(SINE_X, SINE_Y) == pytest.approx(keep.best, rel=1e-12)


# ------------------------------------------------------------------ optimizers: one rule, two applications
@pytest.mark.parametrize("make", [lambda: nn_xp.Adam(0.01, weight_decay=0.1), lambda: nn_xp.AdamW(0.01),
                                  lambda: nn_xp.SGD(0.1, momentum=0.9, weight_decay=0.01)],
                         ids=["adam", "adamw", "sgd-momentum"])
def test_a_rule_applied_to_one_flat_buffer_equals_it_applied_per_parameter(make):
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(5)
    shapes = [(4, 3), (2, 4)]
    host = [a for n_out, n_in in shapes
            for a in (rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out))]
    flat_params = FlatParameters(np.concatenate([a.ravel() for a in host]), shapes, False, xp)
    flat_grads = flat_params.like(np.empty_like(flat_params.flat))
    listed = [a.copy() for a in host]
    flat_opt, list_opt = make(), make()
    for _ in range(4):
        grads = [rng.standard_normal(a.shape) for a in host]
        for view, g in zip(flat_grads, grads):
            view[...] = g
        flat_opt.step(flat_params, flat_grads)
        list_opt.step(listed, [g.copy() for g in grads])  # any list, default names W0, b0, ...
    assert sorted(list_opt.state) == ["W0", "W1", "b0", "b1"]
    for p, q in zip(flat_params, listed):
        np.testing.assert_allclose(p, q, rtol=1e-14, atol=1e-16)


def test_step_works_on_any_namespace_with_immutable_style_rules(backend):
    """``Optimizer.step`` on plain lists of the backend's arrays: the list's items are the new parameters."""
    xp = backend.xp
    params = [backend.asarray(np.ones((2, 3))), backend.asarray(np.zeros(2))]
    grads = [backend.asarray(np.full((2, 3), 0.5)), backend.asarray(np.ones(2))]
    nn_xp.SGD(0.1).step(params, grads, ["W0", "b0"], xp=xp)
    np.testing.assert_allclose(nn_xp.to_numpy(params[0]), 0.95)
    np.testing.assert_allclose(nn_xp.to_numpy(params[1]), -0.1)


@pytest.mark.parametrize("engine", ["buffered", "portable"])
def test_an_optimizer_undo_point_survives_its_state_being_replaced(engine):
    net = nn_xp.Network([1, 6, 1], backend="numpy", dtype="float64", seed=7, engine=engine)
    opt = nn_xp.Adam(0.01)
    net.fit(SINE_X, SINE_Y, epochs=3, batch_size=25, optimizer=opt)
    saved, expected = opt.snapshot(), opt.state_dict()
    net.fit(SINE_X, SINE_Y, epochs=2, batch_size=25)
    opt.load_state_dict(opt.state_dict(), net.params)  # the state replaced since the undo point
    opt.restore(saved)
    restored = opt.state_dict()
    assert restored["iterations"] == expected["iterations"] == 12
    for name, slots in expected["state"].items():
        for slot, value in slots.items():
            np.testing.assert_array_equal(restored["state"][name][slot], value)


def test_engines_are_exported_for_plugging_in():
    assert issubclass(BufferedEngine, PortableEngine)
    assert nn_xp.ENGINES == ("auto", "portable", "buffered", "fused", "compiled", "cuda_graph")


def test_the_divergence_warning_points_at_the_callers_line_and_callbacks_let_go_of_the_fit():
    net = nn_xp.Network([1, 16, 1], ["relu", "identity"], backend="numpy", dtype="float64", seed=1)
    stopper = nn_xp.EarlyStopping(monitor="loss", patience=500)
    with pytest.warns(RuntimeWarning, match="non-finite") as record:
        net.fit(SINE_X * 100, SINE_Y * 100, epochs=200, learning_rate=5.0, on_nonfinite="warn",
                callbacks=stopper)
    assert record[0].filename == __file__
    assert stopper.run is None  # it would otherwise hold the training data and the engine's buffers


def test_a_subclass_with_the_old_private_rule_is_told_so_at_once():
    with pytest.raises(TypeError, match=r"defines _update.*update\(self, p, g, state, lr, xp\)"):
        class Old(nn_xp.SGD):
            def _update(self, name, p, g, lr, xp):
                return p


def test_a_fit_reuses_the_last_fits_undo_buffers_and_still_rolls_back(backend):
    """The loop's two undo points are kept with the engine's buffers: the next fit writes into them instead of
    allocating (a 784-1024-1024-10 network's are 15 MB), and a divergence there still rolls back exactly."""
    net = make_net(backend, [1, 16, 1], ["relu", "identity"], seed=1)
    net.fit(SINE_X, SINE_Y, epochs=3, learning_rate=0.1, callbacks=lambda epoch, logs: None)  # 3 calls
    first = [w for w, _ in net.engine.undo_buffers]
    if backend.name == "jax":  # immutable: the points are the parameters themselves, nothing worth keeping
        assert first == []
        return
    assert len(first) == 2
    start = net.get_weights()
    X, Y = SINE_X * 100, SINE_Y * 100
    with pytest.warns(RuntimeWarning, match="non-finite"):
        net.fit(X, Y, epochs=200, learning_rate=5.0, on_nonfinite="warn")
    assert all(a is b for a, b in zip((w for w, _ in net.engine.undo_buffers), first))
    done = len(net.history.epoch)  # rolled back to the start of the last epoch with a finite loss
    twin = make_net(backend, [1, 16, 1], ["relu", "identity"])
    twin.set_weights(start)
    if done:
        twin.fit(X, Y, epochs=done, learning_rate=5.0)
    for (W, b), (Wt, bt) in zip(net.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(W, Wt)
        np.testing.assert_array_equal(b, bt)
    net.release_buffers()
    assert net.engine.undo_buffers == []


def test_set_weights_keeps_the_buffers_fit_reuses(backend):
    """New weights of the network's own shapes leave fit's kept buffers (per-layer values, gradients, undo
    points) in place: a reset between fits (a search, a benchmark) allocates nothing anew."""
    net = make_net(backend, [1, 16, 1], seed=1)
    if net.engine.name == "buffered":
        net.engine.workspace_min_elements = 0
    net.fit(SINE_X, SINE_Y, epochs=2, learning_rate=0.1)
    undo, rows = net.engine.undo_buffers, getattr(net.engine, "workspace_rows", None)
    net.set_weights(net.get_weights())
    assert net.engine.undo_buffers is undo
    assert getattr(net.engine, "workspace_rows", None) == rows
    if net.engine.name == "buffered":
        assert rows == len(SINE_X)
    twin = make_net(backend, [1, 16, 1], seed=1)  # and training from them is training from fresh buffers
    if net.engine.name == "buffered":
        twin.engine.workspace_min_elements = 0  # the same path: per-layer buffers from the first fit on
    twin.set_weights(net.get_weights())
    for n in (net, twin):
        n.fit(SINE_X, SINE_Y, epochs=3, learning_rate=0.1)
    for (W, b), (Wt, bt) in zip(net.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(W, Wt)
        np.testing.assert_array_equal(b, bt)


# ------------------------------------------------------------------ elementwise passes in row blocks
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden,head", [(("sigmoid", "tanh"), ("identity", "mse", 2)),
                                         (("relu", "leaky_relu"), ("sigmoid", "binary_cross_entropy", 2)),
                                         (("exp", "sigmoid"), ("softmax", "cross_entropy", 3))],
                         ids=["sigmoid-tanh", "relu-leaky", "exp-softmax"])
def test_elementwise_passes_in_row_blocks_train_bit_for_bit_as_whole_arrays(monkeypatch, dtype, hidden, head):
    """The bias add, the activation and its derivative a few rows at a time (blocks of 3 rows of the widest
    layer, with a shorter last block and a shorter last batch) give the whole-array passes' history and
    weights exactly, for every activation of nn_xp's own, dropout included."""
    from nn_xp.engine import buffered

    calls = []
    activate = buffered.activate_rows
    monkeypatch.setattr(buffered, "activate_rows", lambda *a: calls.append(a[4]) or activate(*a))
    out, loss, n_out = head
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 3))
    Y = (X[:, :n_out] > 0).astype(float) if loss != "cross_entropy" else np.argmax(X, axis=1)
    runs = []
    for block in (None, 3 * 8 * np.dtype(dtype).itemsize):
        net = nn_xp.Network([3, 8, 6, n_out], [*hidden, out], loss=loss, backend="numpy", dtype=dtype, seed=4,
                            dropout=[0.25, 0.0])
        net.engine.workspace_min_elements = 0  # every layer's values into the workspace
        net.engine.elementwise_block_bytes = block
        history = net.fit(X, Y, epochs=4, batch_size=17, learning_rate=0.05, shuffle=True)
        runs.append((history.history, net.get_weights()))
    assert calls and calls[0] == 3  # the blocked path ran, 3 rows of the 8-wide layer a block
    (h_whole, w_whole), (h_blocks, w_blocks) = runs
    assert h_blocks == h_whole
    for (W, b), (Wb, bb) in zip(w_whole, w_blocks):
        np.testing.assert_array_equal(Wb, W)
        np.testing.assert_array_equal(bb, b)


def test_row_blocks_are_the_cpus_and_sized_to_stay_in_cache():
    """On NumPy fit's elementwise passes take about ELEMENTWISE_BLOCK_BYTES of rows at a time, per layer."""
    from nn_xp.engine.buffered import ELEMENTWISE_BLOCK_BYTES

    net = nn_xp.Network([784, 1024, 10], ["sigmoid", "identity"], backend="numpy", dtype="float32")
    assert net.engine.elementwise_block_bytes == ELEMENTWISE_BLOCK_BYTES
    assert net.engine.elementwise_rows(net.layers) == [ELEMENTWISE_BLOCK_BYTES // 4096,
                                                       ELEMENTWISE_BLOCK_BYTES // 40]
    net.engine.elementwise_block_bytes = 1  # never less than a row
    assert net.engine.elementwise_rows(net.layers) == [1, 1]
