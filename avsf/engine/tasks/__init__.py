"""The engine's tasks: one :class:`~avsf.engine.tasks.base.Task` per ``model.task``.

- ``"classify"``: :class:`ClassificationTask` (a label per clip, multi-view test);
- ``"detect"``: :class:`DetectionTask` (AVA: actions per person box, frame AP);
- ``"pretrain"``: :class:`PretrainTask` (pretext tasks, no labels; final metrics on val).

``task_for(cfg)`` gives a run's task; the trainer and the evaluator call nothing else that
depends on the task. The interface and the shared evaluation loop are in :mod:`.base`.
"""

from __future__ import annotations

from avsf.config import RunConfig
from avsf.engine.tasks.base import StepLoss, Task, evaluation_batches, gather_rows
from avsf.engine.tasks.classify import ClassificationTask
from avsf.engine.tasks.detect import DetectionTask
from avsf.engine.tasks.pretrain import PretrainTask
from avsf.errors import UserError

# the same names as avsf.config.TASKS (tests/test_tasks.py checks it)
TASKS: dict[str, type[Task]] = {t.name: t for t in (ClassificationTask, DetectionTask, PretrainTask)}


def task_for(cfg: RunConfig) -> Task:
    """The task of a run (``cfg.model.task``)."""
    cls = TASKS.get(cfg.model.task)
    if cls is None:
        raise UserError(f"model.task={cfg.model.task!r} has no engine task; choose one of {', '.join(TASKS)}")
    return cls(cfg)


__all__ = ["TASKS", "ClassificationTask", "DetectionTask", "PretrainTask", "StepLoss", "Task", "evaluation_batches",
           "gather_rows", "task_for"]
