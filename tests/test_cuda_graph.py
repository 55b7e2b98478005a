"""engine="cuda_graph" (issue 17, item 11), tested on a CPU: argument handling, refusal off CuPy, and the
trainer's replays through a stand-in capture that runs the recorded epoch eagerly, against the buffered
engine. What only a GPU shows (the capture itself, its speed) is in ci/gpu.sh and docs/gpu.md."""
from __future__ import annotations

import numpy as np
import pytest

import nn_xp
from nn_xp.engine import CudaGraphEngine, CudaGraphTrainer


class EagerReplay:
    """Stands in for CuPy's capture: records nothing, and a replay runs the epoch's code again (a real
    replay runs its device work only: the trainer must not rely on host code inside the epoch)."""

    def __init__(self) -> None:
        self.captures = 0

    def __call__(self, fn):
        self.captures += 1
        return fn


class FixedBuffers:
    """A stricter stand-in: a replay works on the optimizer's state buffers that the capture saw, whatever
    ``optimizer.state`` was rebound to since (a real graph runs no host code and keeps its addresses)."""

    def __init__(self, optimizer) -> None:
        self.optimizer, self.captures = optimizer, 0

    def __call__(self, fn):
        self.captures += 1
        opt, captured = self.optimizer, self.optimizer.state

        def replay():
            host, opt.state = opt.state, captured
            try:
                fn()
            finally:
                opt.state = host

        return replay


def _data(m=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 3))
    return X, np.sin(X.sum(axis=1, keepdims=True))


def _pair(loss="mse", sizes=(3, 8, 1), seed=1):
    """The same network twice: on the buffered engine, and on the graph engine with the stand-in."""
    acts = ["tanh", "identity"] if loss == "mse" else ["tanh", "sigmoid"]
    ref = nn_xp.Network(list(sizes), acts, loss=loss, backend="numpy", dtype="float64", seed=seed)
    net = nn_xp.Network(list(sizes), acts, loss=loss, backend="numpy", dtype="float64", seed=seed)
    capture = EagerReplay()
    net.engine = CudaGraphEngine(net.backend, net.dtype, capture=capture)
    net.set_weights(net.get_weights())  # laid out by the graph engine
    return ref, net, capture


def _same(a, b):
    for (W, b_), (W2, b2) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b_, b2)


def test_the_graph_engine_is_for_cupy_and_says_so_elsewhere(backend):
    if backend.name == "cupy":
        pytest.skip("on CuPy the engine is chosen: ci/gpu.sh runs it")
    with pytest.raises(ValueError, match="engine='cuda_graph' captures CUDA graphs with CuPy, and the "
                                         f"network is on the {backend.name} backend"):
        nn_xp.Network([1, 4, 1], backend=backend.name, device=backend.device, engine="cuda_graph")
    assert "cuda_graph" in nn_xp.ENGINES


@pytest.mark.parametrize("optimizer", [
    lambda: nn_xp.SGD(0.05), lambda: nn_xp.SGD(0.05, momentum=0.9),
    lambda: nn_xp.SGD(0.05, momentum=0.5, nesterov=True, weight_decay=1e-3)])
@pytest.mark.parametrize("callbacks", [False, True])
def test_replayed_epochs_equal_the_buffered_engines(optimizer, callbacks):
    ref, net, capture = _pair()
    X, Y = _data()
    seen = []
    cbs = [lambda epoch, logs: seen.append(epoch)] if callbacks else None
    h_ref = ref.fit(X, Y, epochs=37, optimizer=optimizer(), callbacks=cbs)
    h = net.fit(X, Y, epochs=37, optimizer=optimizer(), callbacks=cbs)
    _same(ref, net)
    assert h.history == h_ref.history and h.epoch == h_ref.epoch
    assert net.optimizer.iterations == ref.optimizer.iterations == 37
    assert capture.captures == 1  # the first epoch eagerly, then one capture for the fit
    if callbacks:
        assert seen == list(range(37)) * 2


def test_validation_and_accuracy_ride_along_and_a_second_fit_captures_again():
    ref, net, capture = _pair(loss="binary_cross_entropy")
    X, _ = _data(seed=2)
    Y = (X[:, :1] > 0).astype(float)
    for model in (ref, net):
        model.fit(X[:30], Y[:30], epochs=5, optimizer=nn_xp.SGD(0.1), validation_data=(X[30:], Y[30:]))
        model.fit(X[:30], Y[:30], epochs=12, validation_data=(X[30:], Y[30:]))  # continues, same optimizer
    _same(ref, net)
    assert net.history.history == ref.history.history
    assert set(net.history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert capture.captures == 2


def test_a_rate_changed_by_a_callback_is_captured_again():
    ref, net, capture = _pair()
    X, Y = _data()

    for model in (ref, net):
        opt = nn_xp.SGD(0.1)
        model.fit(X, Y, epochs=20, optimizer=opt,
                  callbacks=[lambda epoch, logs, opt=opt: epoch == 9 and opt.set_learning_rate(0.02)])
    _same(ref, net)
    assert capture.captures == 2  # once at epoch 1, again when the rate changed after epoch 9


def test_divergence_rolls_back_to_the_start_of_a_call_with_a_finite_loss():
    ref, net, _ = _pair()
    X, Y = _data()
    Y = Y * 1e6
    with pytest.raises(FloatingPointError, match="rolled back"):
        net.fit(X, Y, epochs=200, optimizer=nn_xp.SGD(5.0))
    done = len(net.history)  # the last epoch with a finite loss: its call's start, then replays up to it
    assert 0 < done < 200 and all(np.isfinite(net.history.history["loss"]))
    ref.fit(X, Y, epochs=done, optimizer=nn_xp.SGD(5.0))  # those epochs on the buffered engine
    _same(ref, net)
    assert net.history.history == ref.history.history


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 8}, "replays one full-batch epoch, and batch_size=8"),
    ({"optimizer": "adam"}, "replays an SGD step; Adam reads the step count"),
    ({"learning_rate": nn_xp.StepDecay(0.1, every=5)}, "bakes the learning rate into the captured epoch"),
])
def test_what_a_replay_cannot_honour_is_refused_before_any_epoch(kwargs, match):
    _, net, capture = _pair()
    X, Y = _data()
    before = net.get_weights()
    with pytest.raises(ValueError, match=match):
        net.fit(X, Y, epochs=3, **kwargs)
    _same_weights = [np.array_equal(a, b) for (W, b_), (W2, b2) in zip(before, net.get_weights())
                     for a, b in ((W, W2), (b_, b2))]
    assert all(_same_weights) and capture.captures == 0 and net.history is None


def test_the_trainer_reads_its_metrics_from_copies_not_the_buffer_a_replay_overwrites():
    _, net, _ = _pair()
    X, Y = _data()
    net.fit(X, Y, epochs=1, optimizer=nn_xp.SGD(0.05))
    Xd, Yd = (net.backend.asarray(a, dtype=net.dtype) for a in (X, Y))
    trainer = net.engine.trainer(net, net.optimizer, Xd, Yd)
    assert isinstance(trainer, CudaGraphTrainer) and trainer.chunk > 1
    rows = trainer.run(4)
    losses = [float(r[0]) for r in rows]
    assert len(set(losses)) == 4  # four epochs, four different losses, none overwritten by the next replay


@pytest.mark.parametrize("how", ["divergence", "ctrl-c"])
def test_a_roll_back_inside_the_first_call_replays_from_a_fresh_optimizers_state(how, monkeypatch):
    """Back to the fit's first undo point, whose optimizer state is empty: the state is a new object, so the
    next epoch runs eagerly (making new buffers) and is captured again; a replay of the old graph would run
    on the velocities of the epochs being undone."""
    X, Y = _data()
    lr, scale = (5.0, 1e6) if how == "divergence" else (0.1, 1.0)
    opt, ref_opt = nn_xp.SGD(lr, momentum=0.9), nn_xp.SGD(lr, momentum=0.9)
    ref = nn_xp.Network([3, 8, 1], ["relu", "identity"], backend="numpy", dtype="float64", seed=1)
    net = nn_xp.Network([3, 8, 1], ["relu", "identity"], backend="numpy", dtype="float64", seed=1)
    net.engine = CudaGraphEngine(net.backend, net.dtype, capture=FixedBuffers(opt))
    net.set_weights(net.get_weights())
    if how == "divergence":
        with pytest.raises(FloatingPointError, match="rolled back to the start of epoch"):
            net.fit(X, Y * scale, epochs=100, optimizer=opt)
    else:
        calls = []
        measure = nn_xp.Network.measure

        def interrupting(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 6:  # inside the first call's sixth epoch (16 a call)
                raise KeyboardInterrupt
            return measure(self, *args, **kwargs)

        monkeypatch.setattr(nn_xp.Network, "measure", interrupting)
        with pytest.raises(KeyboardInterrupt):
            net.fit(X, Y, epochs=100, optimizer=opt, validation_data=(X[:10], Y[:10]))
        monkeypatch.undo()
    done = len(net.history)
    assert 1 < done < 16  # inside the first call, past its first epoch: a replay from epoch 0 was needed
    kwargs = {} if how == "divergence" else {"validation_data": (X[:10], Y[:10])}
    ref.fit(X, Y * scale, epochs=done, optimizer=ref_opt, **kwargs)
    _same(ref, net)
    assert net.history.history == ref.history.history
    assert opt.state.keys() == ref_opt.state.keys() and opt.iterations == ref_opt.iterations


def test_an_optimizer_reset_by_a_callback_is_captured_again():
    """``reset()`` mid-fit gives the optimizer a new state: the next epoch runs eagerly and is captured, as a
    roll-back to a fresh optimizer's state is."""
    X, Y = _data()
    opt, ref_opt = nn_xp.SGD(0.1, momentum=0.9), nn_xp.SGD(0.1, momentum=0.9)
    ref = nn_xp.Network([3, 8, 1], ["tanh", "identity"], backend="numpy", dtype="float64", seed=1)
    net = nn_xp.Network([3, 8, 1], ["tanh", "identity"], backend="numpy", dtype="float64", seed=1)
    capture = FixedBuffers(opt)
    net.engine = CudaGraphEngine(net.backend, net.dtype, capture=capture)
    net.set_weights(net.get_weights())
    for model, o in ((ref, ref_opt), (net, opt)):
        model.fit(X, Y, epochs=12, optimizer=o, callbacks=[lambda epoch, logs, o=o: epoch == 5 and o.reset()])
    _same(ref, net)
    assert net.history.history == ref.history.history and capture.captures == 2
