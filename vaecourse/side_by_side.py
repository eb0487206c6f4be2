"""Two trainings side by side, one CPU core each.

The VAE chapter compares its recipe with the official PyTorch example's, given the same
wall-clock time. One after the other, that comparison costs two training times; side by
side, each in its own process with one thread, it costs one, and both recipes get the
same hardware (one core) for the same time.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager

import torch

from vaecourse.train import threads


def _run_job(job, started, stop, results):
    # In the second process: one PyTorch thread, and every outcome reported back.
    torch.set_num_threads(1)
    try:
        # pickled here to plain bytes: through the queue, PyTorch would share tensors by
        # file descriptors, which die with this process
        results.put(("result", pickle.dumps(job(started, stop))))
    except BaseException:  # noqa: BLE001 - reported to the parent, which re-raises it
        results.put(("error", traceback.format_exc()))


class SideJob:
    """The job running in the second process (see ``on_second_core``)."""

    def __init__(self, job: Callable):
        # "spawn": a fresh interpreter, safe in a notebook kernel that already runs threads
        context = multiprocessing.get_context("spawn")
        self.started, self.stop = context.Event(), context.Event()
        self._results = context.Queue()
        self._process = context.Process(
            target=_run_job, args=(job, self.started, self.stop, self._results)
        )
        self._outcome = None
        self.start_time = None  # when the job's clock started, by this process's clock

    def _poll(self, timeout: float) -> bool:
        """Collect the job's outcome if it is ready; True once it is."""
        if self._outcome is None:
            try:
                self._outcome = self._results.get(timeout=timeout)
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError(
                        "the second process ended without a result (exit code "
                        f"{self._process.exitcode}): it crashed or was killed; its "
                        "messages went to the terminal that runs Python or Jupyter"
                    ) from None
        return self._outcome is not None

    def _wait_started(self) -> None:
        # until the job's clock starts, or it returns without training (a cache hit)
        while not self.started.is_set() and not self._poll(0.05):
            pass
        self.start_time = time.perf_counter()

    def wait(self, seconds: float) -> None:
        """Keep the second core working until ``seconds`` after the job's start (or until
        the job returns): for when this side had nothing to train."""
        while time.perf_counter() - self.start_time < seconds and not self._poll(0.05):
            pass

    def result(self):
        """The job's return value, once the with-block has ended. An error in the job is
        raised here, with the job's own traceback."""
        if self._outcome is None:
            raise RuntimeError(
                "no result: call result() after the with-block has ended normally"
            )
        kind, value = self._outcome
        if kind == "error":
            raise RuntimeError(f"the job in the second process failed:\n{value}")
        return pickle.loads(value)


@contextmanager
def on_second_core(job: Callable):
    """Run ``job(started, stop)`` in a second process with one PyTorch thread while the
    with-block runs here, also with one thread; yield its ``SideJob``.

    The job sets the event ``started`` when its clock starts (entering the block waits for
    that, so both sides start together) and returns soon after ``stop`` is set. Leaving
    the block sets ``stop`` and waits for the job's result. If the block raises (or is
    interrupted), the job is killed instead, so a half-trained model is never cached.
    ``job`` must be importable (a function in a module), as the second process imports it.
    """
    try:  # the second process finds the job by its module and name
        importable = job.__module__ != "__main__" and bool(pickle.dumps(job))
    except (AttributeError, TypeError, pickle.PicklingError):
        importable = False  # a lambda, or a function defined inside another
    if not importable:
        raise ValueError(
            "on_second_core needs a function that the second process can import by "
            f"name, got {job!r}: define it with def at the top level of a module (a .py "
            "file on the Python path), not in a notebook cell, a lambda or a function"
        )
    side = SideJob(job)
    side._process.start()
    try:
        side._wait_started()
        with threads(1):
            yield side
        side.stop.set()
        while not side._poll(0.2):
            pass
        side._process.join()
    finally:
        if side._process.is_alive():
            side._process.kill()
            side._process.join()
