"""The engine's tasks (avsf/engine/tasks.py) and the one DropPathway draw.

``test_reference_runs_are_unchanged`` reruns four short runs (tests/task_runs.py: classify,
detect, pretrain, probe) and compares their final.json, metrics.jsonl and the evaluator's
final.json with the files the code before the task interface wrote (tests/reference/tasks.json),
field for field, timing fields aside.
"""

from __future__ import annotations

import json

import pytest

import task_runs
from conftest import test_data_dir


def _diff(a, b, path=""):
    """Paths where two JSON values differ (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _diff(a.get(k, "<missing>"), b.get(k, "<missing>"),
                                                                         f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_reference_runs_are_unchanged(tmp_path):
    reference = json.loads(task_runs.REFERENCE.read_text())
    if reference["environment"] != task_runs.environment():
        pytest.skip(f"reference recorded with {reference['environment']}, this is {task_runs.environment()}: "
                    f"floats may round differently; record it here with `python tests/task_runs.py --record` "
                    f"on the commit before a change to compare across it")
    runs = task_runs.run_all(tmp_path, test_data_dir())
    assert set(runs) == set(reference["runs"])
    # JSON round trip: tuples become lists as in the file
    differences = _diff(json.loads(json.dumps(runs)), reference["runs"])
    assert not differences, "\n".join(differences[:20])
