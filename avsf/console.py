"""Where this process shows its output: a Jupyter kernel (a notebook in JupyterLab, or one that
papermill executes), a terminal, or a log file. Imports nothing of avsf: every floor may ask.

A kernel shows stderr as a red box, so in a kernel normal progress goes to stdout and the
console shows only warnings (the run's log.txt keeps every line).
"""

from __future__ import annotations

import sys
from typing import TextIO


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's kernel app), whatever the frontend."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def widgets_available() -> bool:
    """True when ipywidgets (what tqdm's notebook bar is drawn with) imports."""
    try:
        import ipywidgets  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is an interactive terminal (a bar can redraw itself in place)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def status_stream() -> TextIO:
    """Where status lines go by default: stderr on the command line (stdout stays for results
    a script may pipe), stdout in a notebook (stderr would be drawn as an error)."""
    return sys.stdout if in_notebook() else sys.stderr
