"""The learning worker: trains on the served base weights from shared memory, in its own process, and a crash
or an exception there is a failed task, never a dead server."""

from __future__ import annotations

import asyncio
import os

import pytest
import torch

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.learner.job import JobBuilder
from aphrodite.continuous_learning.learner.policy import PolicyExample
from aphrodite.continuous_learning.learner.task import TrainingJob, train_and_gate
from aphrodite.continuous_learning.learner.worker import (InThreadRunner, TaskFailed, TrainingWorker, WorkerCrashed,
                                                          share_weights)
from aphrodite.modeling.loader import load_model
from aphrodite.modeling.tokenizer import Tokenizer


def crash(model, job) -> None:
    os._exit(3)


def fail(model, job) -> None:
    raise ValueError("bad job")


def pid_and_niceness(model, job) -> tuple[int, int, int]:
    return os.getpid(), os.nice(0), torch.get_num_threads()


def duty_hook(model, job, before_step=None) -> tuple[str, float]:
    return type(before_step).__name__, before_step.duty


def job(model, model_dir) -> TrainingJob:
    """A real two-step job on the tiny model (the gate's base values computed here, in the parent process)."""
    config = ServerSideConfig(learner_steps=2, learner_rank=2, learner_alpha=4.0, learner_stop_loss=0.0)
    builder = JobBuilder(model, Tokenizer(model_dir), config, max_len=128)
    taught = PolicyExample("curated", "operator", [{"role": "user", "content": "Hello"}], "Hello there.", True,
                           ids=["manual-1"])
    return builder.build([taught], {}, 1e-2, seed=1)


def test_worker_trains_like_in_process_and_survives_failures(tiny_model_dir) -> None:
    model = load_model(tiny_model_dir)
    share_weights(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    worker = TrainingWorker(model, busy=lambda: True, duty_cycle=0.5)
    j = job(model, tiny_model_dir)

    async def scenario():
        pid, nice, threads = await worker.run(pid_and_niceness, None)
        assert pid != os.getpid() and nice >= 19 and threads == 1
        assert await worker.run(duty_hook, None) == ("DutyCycle", 0.5)  # a task with before_step gets the duty cycle
        remote = await worker.run(train_and_gate, j)
        local = await InThreadRunner(model).run(train_and_gate, j)
        with pytest.raises(TaskFailed, match="bad job"):
            await worker.run(fail, j)
        with pytest.raises(WorkerCrashed):
            await worker.run(crash, j)
        again = await worker.run(pid_and_niceness, None)  # a new worker after the crash
        await worker.close()
        return remote, local, again[0]

    remote, local, new_pid = asyncio.run(scenario())
    assert worker.starts == 2 and new_pid != os.getpid()
    assert remote.gate["target"]["train_after"] == pytest.approx(local.gate["target"]["train_after"], rel=1e-4)
    assert remote.manifest == local.manifest == [("manual-1", "curated")]
    for name, d in local.deltas.items():
        assert torch.allclose(remote.deltas[name].b, d.b, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # base weights untouched


def test_a_diverging_task_is_refused_and_leaves_the_base_weights_alone(tiny_model_dir) -> None:
    model = load_model(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    j = job(model, tiny_model_dir)
    j.objective.lr = 1e30  # Adam's first step moves every weight by about lr: the loss overflows
    result = train_and_gate(model, j)
    assert not result.accepted and result.reason == "training diverged: a non-finite loss or delta"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
