"""When fit writes checkpoints, and resuming without naming the optimizer."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import SINE_X, SINE_Y

import nn_xp
from nn_xp.checkpoint import load_checkpoint


def _net():
    return nn_xp.Network([1, 6, 1], "tanh", backend="numpy", dtype="float64", seed=11)


def test_a_final_checkpoint_when_epochs_is_not_a_multiple(tmp_path):
    path = tmp_path / "ck.safetensors"
    net = _net()
    net.fit(SINE_X, SINE_Y, epochs=7, checkpoint=path, checkpoint_every=3)
    epoch, history = load_checkpoint(path, _net(), None)
    assert epoch == 7 and history.epoch == list(range(7))


def test_a_checkpoint_when_a_callback_stops_training(tmp_path):
    path = tmp_path / "ck.safetensors"

    def stop(epoch, logs):
        if epoch == 3:  # a checkpoint epoch: it is written before the callbacks run
            raise nn_xp.StopTraining

    net = _net()
    net.fit(SINE_X, SINE_Y, epochs=50, checkpoint=path, checkpoint_every=2, callbacks=stop)
    fresh = _net()
    epoch, history = load_checkpoint(path, fresh, None)
    assert epoch == 4 and len(history) == 4
    for (W, b), (Wf, bf) in zip(net.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(W, Wf)
        np.testing.assert_array_equal(b, bf)


def test_resume_without_naming_the_optimizer_continues_the_saved_one(tmp_path):
    path = tmp_path / "ck.safetensors"
    kwargs = dict(batch_size=20)
    full = _net()
    full.fit(SINE_X, SINE_Y, epochs=6, optimizer=nn_xp.Adam(0.01), **kwargs)
    first = _net()
    first.fit(SINE_X, SINE_Y, epochs=3, optimizer=nn_xp.Adam(0.01), checkpoint=path, **kwargs)
    resumed = _net()
    # no optimizer given: the checkpoint's Adam
    resumed.fit(SINE_X, SINE_Y, epochs=6, resume_from=path, **kwargs)
    assert isinstance(resumed.optimizer, nn_xp.Adam) and resumed.optimizer.iterations == 6 * 5
    for (W, b), (Wf, bf) in zip(resumed.get_weights(), full.get_weights()):
        np.testing.assert_array_equal(W, Wf)
        np.testing.assert_array_equal(b, bf)


def test_a_refused_checkpoint_changes_nothing(tmp_path):
    path = tmp_path / "ck.safetensors"
    _net().fit(SINE_X, SINE_Y, epochs=2, optimizer=nn_xp.SGD(0.1, momentum=0.9), checkpoint=path)
    other = nn_xp.Network([1, 7, 1], "tanh", backend="numpy", dtype="float64", seed=11)  # another shape
    other.fit(SINE_X, SINE_Y, epochs=1, optimizer="adam")
    adam, weights = other.optimizer, other.get_weights()
    with pytest.raises(nn_xp.ModelFileError, match="is a checkpoint of a 1-6-1"):
        other.fit(SINE_X, SINE_Y, epochs=4, resume_from=path)
    assert other.optimizer is adam
    np.testing.assert_array_equal(other.get_weights()[0][0], weights[0][0])


def test_resuming_a_scheduled_optimizer_needs_it_named(tmp_path):
    path = tmp_path / "ck.safetensors"
    schedule = nn_xp.StepDecay(0.01, drop=0.5, every=5)
    _net().fit(SINE_X, SINE_Y, epochs=4, optimizer=nn_xp.Adam(schedule), checkpoint=path)
    with pytest.raises(nn_xp.ModelFileError, match="learning-rate schedule"):
        _net().fit(SINE_X, SINE_Y, epochs=6, resume_from=path)
    resumed = _net()
    resumed.fit(SINE_X, SINE_Y, epochs=6, resume_from=path, optimizer=nn_xp.Adam(schedule))
    assert resumed.optimizer.iterations == 6


def test_optimizer_state_from_the_caller_is_copied():
    net = _net()
    net.fit(SINE_X, SINE_Y, epochs=2, optimizer="adam")
    state = net.optimizer.state_dict()
    kept = state["state"]["W0"]["m"].copy()
    other = _net()
    other.optimizer = nn_xp.Adam()
    other.optimizer.load_state_dict(state, other.params)
    other.fit(SINE_X, SINE_Y, epochs=2)
    np.testing.assert_array_equal(state["state"]["W0"]["m"], kept)


def test_a_checkpoint_missing_a_slot_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    path = tmp_path / "ck.safetensors"
    _net().fit(SINE_X, SINE_Y, epochs=2, optimizer="adam", checkpoint=path)
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    del tensors["optimizer/W0/v"]
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(nn_xp.ModelFileError, match="keeps"):
        _net().fit(SINE_X, SINE_Y, epochs=4, resume_from=path)
    with pytest.raises(nn_xp.ModelFileError, match="does not fit"):
        nn_xp.load(path)
