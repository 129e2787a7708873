"""avsf presets: list the named configs."""

from __future__ import annotations

import json

HELP = "list the named presets (one per paper model row, plus the smoke-scale models)"


def add_arguments(p) -> None:
    p.add_argument("name", nargs="?", help="show this preset's whole config as JSON")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    from avsf.presets import PRESET_NOTES, get_preset, list_presets

    if args.name:
        print(get_preset(args.name).to_json())
        return 0
    names = list_presets()
    if args.json:
        print(json.dumps({n: PRESET_NOTES[n] for n in names}, indent=2))
        return 0
    width = max(map(len, names))
    for n in names:
        print(f"{n:<{width}}  {PRESET_NOTES[n]}")
    return 0
