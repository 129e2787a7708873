"""The preset registry: preset names -> functions that build a fresh :class:`~avsf.config.RunConfig`.

Presets are registered by name like timm's model registry: :mod:`avsf.presets` decorates each
preset function with :func:`register_preset` when it is imported. Look presets up through
that module (``from avsf.presets import get_preset, list_presets``): importing it is what
fills the registry. This module imports nothing of the presets, so the presets import it and
the config without a cycle (config <- registry <- presets).
"""

from __future__ import annotations

from typing import Callable

from avsf.config import ConfigError, RunConfig, validate

PRESETS: dict[str, Callable[[], RunConfig]] = {}
PRESET_NOTES: dict[str, str] = {}  # name -> one line for `avsf presets`


def register_preset(name: str, note: str = "") -> Callable[[Callable[[], RunConfig]], Callable[[], RunConfig]]:
    """Decorator: register ``fn`` as preset ``name`` (``note`` defaults to its docstring's first line)."""
    def deco(fn: Callable[[], RunConfig]) -> Callable[[], RunConfig]:
        if name in PRESETS:
            raise ValueError(f"preset {name!r} registered twice")
        PRESETS[name] = fn
        PRESET_NOTES[name] = note or (fn.__doc__ or "").strip().splitlines()[0]
        return fn
    return deco


def get_preset(name: str) -> RunConfig:
    """A fresh, validated RunConfig for the named preset (unknown names list the known ones)."""
    if not PRESETS:
        raise RuntimeError("no preset is registered: import get_preset from avsf.presets, which registers them")
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    cfg = PRESETS[name]()
    cfg.name = name
    return validate(cfg)


def list_presets() -> list[str]:
    """Every registered preset name, sorted."""
    return sorted(PRESETS)
