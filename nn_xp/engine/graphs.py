"""CUDA-graph epochs (opt-in): the buffered engine's full-batch epoch, captured once and replayed.

A tiny network (the blog's 1-20-1) spends its GPU epoch launching a few dozen
small kernels, each costing more on the host than on the device. Captured as
one CUDA graph, an epoch is one launch. ``Network(..., engine="cuda_graph")``
asks for it, on CuPy only; it is opt-in until a GPU has measured it.

What a replay needs, and what the trainer checks before the first epoch:

- fixed shapes and addresses: full batch (no shuffle), the engine's kept
  buffers, and every temporary of the epoch taken from a memory pool private
  to the graph (as ``torch.cuda.graph`` does), so no other allocation can reuse
  the memory a replay writes;
- no host value that changes between epochs baked into the kernels: plain SGD
  (with momentum and weight decay, which are constants) at a constant rate; a
  rate changed during the fit (by a callback) is captured again. Adam's bias
  correction changes every step, so Adam is refused;
- the first epoch of a fit runs eagerly: it is a real epoch, it compiles the
  kernels and it allocates the optimizer's state, which the graph then reads.

The capture itself is a strategy object (:class:`CupyCapture` on a GPU), so
the rest is tested on a CPU with a stand-in that replays the epoch eagerly.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._typing import Array
from .buffered import BufferedEngine, BufferedTrainer

__all__ = ["CudaGraphEngine", "CudaGraphTrainer", "CupyCapture"]

#: ``capture(fn) -> replay``: record the device work of ``fn()`` (not running it) and give a function that
#: runs that work again on the current stream
Capture = Callable[[Callable[[], None]], Callable[[], None]]


class CupyCapture:
    """Capture with CuPy: on a side stream, in relaxed mode, every allocation from a pool kept with the
    graph; replays go to the current stream, ordered with everything else ``fit`` does there. The replay
    function holds the pool, the stream and the graph: they live as long as it does (one fit's trainer)."""

    def __call__(self, fn: Callable[[], None]) -> Callable[[], None]:
        import cupy  # only here: the engine is chosen on CuPy alone

        pool, stream = cupy.cuda.MemoryPool(), cupy.cuda.Stream(non_blocking=True)
        cupy.cuda.get_current_stream().synchronize()  # what the epoch reads is written
        with stream, cupy.cuda.using_allocator(pool.malloc):
            stream.begin_capture(cupy.cuda.runtime.streamCaptureModeRelaxed)
            try:
                fn()
            finally:
                graph = stream.end_capture()

        def replay(_kept: tuple = (pool, stream)) -> None:
            graph.launch(cupy.cuda.get_current_stream())

        return replay


class CudaGraphEngine(BufferedEngine):
    """The buffered engine whose trainers replay a captured epoch (see the module's text)."""

    name = "cuda_graph"

    def __init__(self, backend: Any, dtype: Any, capture: Capture | None = None) -> None:
        super().__init__(backend, dtype)
        self.capture = CupyCapture() if capture is None else capture

    def trainer(self, net: Any, optimizer: Any, X: Array, Y: Array,
                validation: tuple[Array, Array] | None = None, *, batch_size: int | None = None,
                shuffle: bool = True, gradient_hook: Any = None, scoring: Any = None) -> CudaGraphTrainer:
        from ..optimizers import SGD

        if any(net.dropout):
            raise ValueError(f"engine='cuda_graph' replays one captured epoch, which would drop the same "
                             f"units every epoch, and this network has dropout {list(net.dropout)} (new "
                             "masks every step); use engine='auto', or a network without dropout")
        if scoring is not None:
            raise ValueError("engine='cuda_graph' replays one captured epoch that measures the loss (and "
                             "accuracy) only; fit(sample_weight=, class_weight=, metrics=, or validation "
                             "weights) needs engine='auto'")

        if batch_size is not None and batch_size < X.shape[0]:
            raise ValueError(f"engine='cuda_graph' replays one full-batch epoch, and batch_size={batch_size} "
                             f"cuts {X.shape[0]} samples into mini-batches (reshuffled every epoch); use "
                             "batch_size=None, or engine='auto'")
        if not isinstance(optimizer, SGD):
            raise ValueError(f"engine='cuda_graph' replays an SGD step; {type(optimizer).__name__} reads the "
                             "step count (Adam's bias correction) or other host state that changes every "
                             "step; use SGD (momentum and weight decay are fine), or engine='auto'")
        if callable(optimizer.learning_rate):
            raise ValueError("engine='cuda_graph' bakes the learning rate into the captured epoch, and "
                             f"{optimizer.learning_rate!r} is a schedule; use a constant rate, or "
                             "engine='auto'")
        return CudaGraphTrainer(net, optimizer, X, Y, validation, batch_size, shuffle, gradient_hook,
                                self.capture)


class CudaGraphTrainer(BufferedTrainer):
    """Full-batch epochs: the first eagerly, then one captured epoch replayed, several per call."""

    #: replays per call when nothing reads the host between epochs: one read of their metrics
    REPLAYS_PER_CALL = 16

    def __init__(self, net: Any, optimizer: Any, X: Array, Y: Array, validation: Any, batch_size: int | None,
                 shuffle: bool, gradient_hook: Any, capture: Capture) -> None:
        super().__init__(net, optimizer, X, Y, validation, batch_size, shuffle, gradient_hook)
        self.capture = capture
        self.chunk = self.REPLAYS_PER_CALL
        k = 1 if net.loss_fn.correct is None else 2
        self.out = self.xp.zeros(k, dtype=net.dtype, device=net.device)  # what a replay writes its metrics to
        # the optimizer's state that the last eager epoch left (None: none has run), whose buffers a capture
        # records: a roll-back to a fresh optimizer's undo point, or load_state_dict, replaces it
        self.state_seen: dict | None = None
        self.replay: Callable[[], None] | None = None
        self.captured_for: tuple[Any, float] | None = None  # (parameters, rate) the graph was captured with

    def run(self, epochs: int = 1) -> list[list[Array]]:
        self.completed = rows = []  # what the loop keeps when an error stops the call part-way
        for _ in range(epochs):
            if self.optimizer.state is not self.state_seen:
                # the fit's first epoch, or the optimizer's state replaced since: eagerly (compiles kernels,
                # makes the state's buffers), and a capture of those buffers after it
                rows.append(self.epoch())
                self.state_seen, self.captured_for = self.optimizer.state, None
                continue
            params, rate, was = self.net.parameters, self.optimizer.learning_rate, self.captured_for
            if was is None or was[0] is not params or was[1] != rate:
                self._capture()  # the first time, or the rate or the parameters' buffer changed since
            counted = self.optimizer.iterations
            self.replay()
            self.optimizer.iterations = counted + 1  # a replay runs no host code: count its step here
            out = self.xp.asarray(self.out, copy=True)  # the next replay writes over self.out
            row = [out[i] for i in range(out.shape[0])]
            if self.validation is not None:
                row += self.net.measure(*self.validation)
            rows.append(row)
        return rows

    def _capture(self) -> None:
        counted = self.optimizer.iterations
        self.replay = self.capture(self._captured_epoch)
        self.optimizer.iterations = counted  # capturing records the step without taking it
        self.captured_for = (self.net.parameters, self.optimizer.learning_rate)

    def _captured_epoch(self) -> None:
        """The full-batch epoch, its metrics written into ``self.out`` (fixed addresses, for replays)."""
        loss, correct = self.batch(self.X, self.Y)
        self.out[0] = loss
        if correct is not None:
            self.out[1] = correct / self.m
