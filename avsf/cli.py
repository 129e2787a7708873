"""The ``avsf`` command. Each subcommand lives in ``avsf/_cli/<name>.py`` and defines
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when
their command runs, so ``avsf presets`` does not pay for importing the data stack."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module under avsf._cli (kept in one list so `avsf --help` shows every command)
COMMANDS = {
    "presets": "presets",
    "flops": "flops",
    "bench": "bench",
    "synth": "synth",
    "inspect": "inspect_file",
    "check-data": "check_data",
    "convert": "convert",
    "train": "train",
    "test": "test",
    "sweep": "sweep",
    "status": "status",
    "report": "report",
    "verify-results": "verify_results",
}


def _load(name: str):
    return importlib.import_module(f"avsf._cli.{COMMANDS[name]}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avsf", description="Audiovisual SlowFast: models, data, training, sweeps.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name, help="(see avsf %s --help)" % name, add_help=False)
            continue
        mod = _load(name)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from avsf.errors import USER_ERRORS

    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return int(_load(args.command).run(args) or 0)
    except USER_ERRORS as e:
        print(f"avsf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"avsf {args.command}: interrupted", file=sys.stderr)
        return 130
