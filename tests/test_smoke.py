from helpers import SINE_X, SINE_Y, make_net


def test_fit_reduces_loss(backend):
    net = make_net(backend, [1, 8, 1])
    before = net.loss(SINE_X, SINE_Y)
    net.fit(SINE_X, SINE_Y, epochs=50, learning_rate=0.1)
    assert net.loss(SINE_X, SINE_Y) < before
