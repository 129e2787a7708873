"""Shared fixtures. ``smoke_root``: the built-in smoke dataset, generated once and cached.

The cache lives in ``$AVSF_TEST_DATA`` or else where the built-in data of a checkout lives,
``<repo>/data/synthetic`` (git-ignored): the same checksummed files `avsf synth` writes, so a
fresh clone generates them once for the unit tests and the notebooks' runs. It is reused
across test sessions; a copy from an older generator version is regenerated, and a
file lock makes parallel sessions generate it once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_data_dir() -> Path:
    """Where tests cache generated data."""
    return Path(os.environ.get("AVSF_TEST_DATA") or REPO / "data" / "synthetic")


test_data_dir.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def smoke_root() -> Path:
    """Folder of the smoke-scale synthetic dataset (seed 0): train/val/test.csv, classnames.json, mp4s."""
    from avsf.data.synthetic import ensure_synthetic

    return ensure_synthetic(test_data_dir(), "smoke", 0)


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared machine OpenMP's
    spin-waiting makes them up to 10x slower; the setting is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
