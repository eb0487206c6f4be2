"""on_second_core: a job in a second process, one thread on each side, stopped on cue."""

import os
import time

import pytest
import torch

from vaecourse.side_by_side import on_second_core


# Jobs live at module level: the second process imports them by name.
def report_and_wait_for_stop(started, stop):
    started.set()
    stop.wait(60)
    return {"pid": os.getpid(), "threads": torch.get_num_threads(), "stopped": True}


def fail_after_starting(started, stop):
    started.set()
    raise ValueError("the job's own message")


def return_without_starting(started, stop):
    return "loaded"  # like a model found in the cache: its clock never starts


def count_until_stopped(started, stop):
    started.set()
    start, ticks = time.perf_counter(), 0
    while not stop.is_set():
        ticks += 1
        time.sleep(0.01)
    return time.perf_counter() - start


def test_the_job_runs_in_another_process_with_one_thread_until_the_block_ends():
    threads_before = torch.get_num_threads()
    with on_second_core(report_and_wait_for_stop) as side:
        inside = torch.get_num_threads()
    out = side.result()
    assert out["pid"] != os.getpid()
    assert out["threads"] == 1 and inside == 1
    assert out["stopped"]
    assert torch.get_num_threads() == threads_before


def test_an_error_in_the_job_is_raised_here_with_its_traceback():
    with on_second_core(fail_after_starting) as side:
        pass
    with pytest.raises(RuntimeError, match="the job's own message"):
        side.result()


def test_a_job_that_returns_without_starting_its_clock_does_not_hang_the_block():
    with on_second_core(return_without_starting) as side:
        pass
    assert side.result() == "loaded"


def test_wait_keeps_the_job_running_for_the_given_time():
    with on_second_core(count_until_stopped) as side:
        side.wait(0.5)
    assert 0.45 < side.result() < 5


def test_an_error_in_the_block_kills_the_job_and_propagates():
    with pytest.raises(KeyError):
        with on_second_core(report_and_wait_for_stop) as side:
            raise KeyError("interrupted")
    assert not side._process.is_alive()
    assert side._process.exitcode != 0  # killed: it never returned (so never cached)
    with pytest.raises(RuntimeError, match="after the with-block"):
        side.result()


def return_a_model(started, stop):
    torch.manual_seed(0)
    return torch.nn.Linear(
        3, 2
    )  # returns at once: this process ends before the parent reads


def test_tensors_come_back_after_the_job_has_exited():
    with on_second_core(return_a_model) as side:
        side._process.join()  # the job has returned and its process is gone
    model = side.result()
    torch.manual_seed(0)
    assert torch.equal(model.weight, torch.nn.Linear(3, 2).weight)


def test_a_job_the_second_process_cannot_import_is_refused_with_advice():
    def local_job(started, stop):
        return None

    local_job.__module__ = "__main__"  # as for a function defined in a notebook cell
    with pytest.raises(ValueError, match="at the top level of a module"):
        with on_second_core(local_job):
            pass


def test_a_lambda_is_refused_too():
    with pytest.raises(ValueError, match="at the top level of a module"):
        with on_second_core(lambda started, stop: None):
            pass
