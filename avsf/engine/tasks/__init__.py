"""The engine's tasks: one :class:`~avsf.engine.tasks.base.Task` per ``model.task``.

- ``"classify"``: :class:`ClassificationTask` (a label per clip, multi-view test);
- ``"detect"``: :class:`DetectionTask` (AVA: actions per person box, frame AP);
- ``"pretrain"``: :class:`PretrainTask` (pretext tasks, no labels; final metrics on val).

``task_for(cfg)`` gives a run's task; the trainer and the evaluator call nothing else that
depends on the task. The interface and the shared evaluation loop are in :mod:`.base`.
"""

from __future__ import annotations

from avsf.config import TASKS as CONFIG_TASKS
from avsf.config import RunConfig
from avsf.engine.tasks.base import StepLoss, Task, evaluation_batches, gather_rows
from avsf.engine.tasks.classify import ClassificationTask
from avsf.engine.tasks.detect import DetectionTask
from avsf.engine.tasks.pretrain import PretrainTask
from avsf.errors import UserError

TASKS: dict[str, type[Task]] = {t.name: t for t in (ClassificationTask, DetectionTask, PretrainTask)}
assert set(TASKS) == set(CONFIG_TASKS), "avsf.config.TASKS and the engine's tasks must name the same tasks"


def task_for(cfg: RunConfig) -> Task:
    """The task of a run (``cfg.model.task``)."""
    try:
        return TASKS[cfg.model.task](cfg)
    except KeyError:
        raise UserError(f"model.task={cfg.model.task!r} has no engine task; choose one of {', '.join(TASKS)}") from None


__all__ = ["TASKS", "ClassificationTask", "DetectionTask", "PretrainTask", "StepLoss", "Task", "evaluation_batches",
           "gather_rows", "task_for"]
