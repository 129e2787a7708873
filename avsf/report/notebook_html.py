"""An executed notebook as one HTML page beside its table: ``results/<nb>/notebook.html``,
readable in any browser without Jupyter, without running anything, without this machine.

The executed copy (``results/_executed/<nb>.ipynb``, what ``make reproduce`` / ``make tables``
write; git-ignored) names this machine's paths: papermill's metadata, the injected parameters,
the launcher's lines. :func:`scrub_notebook` rewrites them as :mod:`avsf.portable` rewrites a
run's records (relative to the project, ``~`` for the home, else the last component); the
page is then checked with :func:`avsf.report.archive.machine_paths_in` and refused if it still
names one. The figures are the notebook's own PNG outputs, embedded as data URIs; the
progress widget's saved state is dropped (the widget's place holds the summary line).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from avsf.engine.io import atomic_write_text
from avsf.errors import UserError
from avsf.experiments import project_root
from avsf.portable import HOME, Anchor, scrub_paths
from avsf.report.archive import EXECUTED_DIR, machine_paths_in

HTML_FILE = "notebook.html"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def executed_path(results_dir: str | os.PathLike, notebook: str) -> Path:
    """Where ``make reproduce`` / ``make tables`` leave the executed notebook."""
    return Path(results_dir) / EXECUTED_DIR / f"{notebook}.ipynb"


def _anchors() -> list[Anchor]:
    return [Anchor(str(project_root()), ""), Anchor(os.path.expanduser("~"), HOME)]


class _PlaceholderAltText(logging.Filter):
    """Drops nbconvert's warning that images lack alt text: its lab template has no way to take
    one, it fills in a placeholder itself, and each figure's title is drawn in the image."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Alternative text is missing" not in record.getMessage()


def _exporter_log() -> logging.Logger:
    log = logging.getLogger("avsf.report.notebook_html")
    if not any(isinstance(f, _PlaceholderAltText) for f in log.filters):
        log.addFilter(_PlaceholderAltText())
    return log


def _scrub_output(output: dict[str, Any], anchors: list[Anchor]) -> dict[str, Any]:
    out = dict(output)
    data = out.pop("data", None)
    out = scrub_paths(out, anchors)  # stream text, tracebacks, metadata
    if isinstance(data, dict):
        if WIDGET_MIME in data and "text/plain" in data:  # no widget state to draw it from: its text
            data = {k: v for k, v in data.items() if k != WIDGET_MIME}
        out["data"] = {k: v if k.startswith("image/") else scrub_paths(v, anchors)  # base64 names no path
                       for k, v in data.items()}
    return out


def scrub_notebook(nb: Any) -> Any:
    """A copy of ``nb`` (nbformat) with the machine's paths rewritten in every cell's source,
    outputs and metadata and in the notebook's metadata, and the widget state dropped."""
    import nbformat  # noqa: PLC0415 (only this export needs it)

    anchors = _anchors()
    raw = nbformat.from_dict(nb).copy()
    meta = {k: v for k, v in raw.get("metadata", {}).items() if k != "widgets"}
    cells = []
    for cell in raw.get("cells", []):
        cell = dict(cell)
        cell["source"] = scrub_paths(cell.get("source", ""), anchors)
        cell["metadata"] = scrub_paths(cell.get("metadata", {}), anchors)
        if "outputs" in cell:
            cell["outputs"] = [_scrub_output(o, anchors) for o in cell["outputs"]]
        cells.append(cell)
    return nbformat.from_dict({**raw, "metadata": scrub_paths(meta, anchors), "cells": cells})


def notebook_html(executed: str | os.PathLike, html: str | os.PathLike) -> Path:
    """Write the executed notebook ``executed`` as an HTML page ``html`` (nbconvert's lab
    template, outputs included, images embedded, machine paths scrubbed).

    Raises UserError when ``executed`` is missing or is not a notebook, or when the page would
    still name a path, host or user of this machine (nothing is written then).
    """
    import nbformat  # noqa: PLC0415
    from nbconvert import HTMLExporter  # noqa: PLC0415 (slow to import; the tables never need it)

    executed, html = Path(executed), Path(html)
    if not executed.is_file():
        raise UserError(f"no executed notebook at {executed}: run it first, e.g. papermill "
                        f"notebooks/{executed.name} {executed}")
    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception as e:  # nbformat raises several kinds for a torn or foreign file
        raise UserError(f"{executed} is not a readable notebook ({type(e).__name__}: {e})") from e
    exporter = HTMLExporter(template_name="lab", embed_images=True, log=_exporter_log())
    body, _ = exporter.from_notebook_node(scrub_notebook(nb))
    found = machine_paths_in(body, rel=html.name)
    if found:
        shown = "\n".join(f"- line {f.line}: {f.text!r} ({f.why})" for f in found[:10])
        raise UserError(f"{executed} rendered as HTML still names this machine:\n{shown}\nnot written to {html}")
    html.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(html, body)
    return html
