"""The audiovisual data pipeline: decoding (PyAV), log-mel audio, clip sampling, transforms,
dataset formats and a loader that survives bad files. See docs/INTERFACES.md, "Data".

`build_dataset` and `build_loader` are imported on first use, so the built-in data generator
(`avsf.data.synthetic`, media writing included) does not pay for torch and torchvision.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_dataset", "build_loader"]


def __getattr__(name: str) -> Any:
    if name == "build_dataset":
        from avsf.data.datasets import build_dataset

        return build_dataset
    if name == "build_loader":
        from avsf.data.loader import build_loader

        return build_loader
    raise AttributeError(f"module 'avsf.data' has no attribute {name!r}")
