"""The main job's notebook as a reader sees it: JupyterLab serving a copy of it with papermill's
parameters injected (smoke scale, one seed, one epoch, 48 videos per split, in-process
runs), opened in a headless Chromium (Debian's chromium and chromium-driver, through
selenium), run with Run All, then read from the page: no stderr and no error output, every
image loaded, the results table there, the progress summary in place of the bar. Screenshots
of the executed notebook (notebook_top.png: progress and table; notebook.png: the figures) are
saved under the test's tmp_path.

.ci/run installs the browser and exports AVSF_CI=1: a missing browser then FAILS this test.
Elsewhere (a laptop without chromium) it is skipped, saying how to run it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from lab_server import running_lab

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "ablate_droppath"
PARAMETERS = {"backend": "debug", "seeds": [0], "overrides": ["solver.epochs=1", "data.limit_videos=48"]}
RUN_TIMEOUT_S = 240.0
STDERR_MIME = "application/vnd.jupyter.stderr"
# JupyterLab settings for the test's server: every cell in the page (the default windowing
# leaves cells out of view unrendered) and no news or update checks
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def _browser_or_skip() -> tuple[str, str]:
    """Chromium and chromedriver, or skip (fail under AVSF_CI=1) saying what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]', as `make install` does)")
    if missing:
        message = f"no {', no '.join(missing)} on this machine"
        if os.environ.get("AVSF_CI") == "1":
            pytest.fail(f"AVSF_CI=1 but {message} (.ci/run installs them)", pytrace=False)
        pytest.skip(f"{message}: apt-get install chromium chromium-driver, then set AVSF_CI=1 (as .ci/run "
                    f"does) to make this test mandatory")
    return chromium, driver


def _workspace(root: Path) -> Path:
    """A folder holding the notebook with the test's parameters injected as papermill does,
    and the lab's settings; returns the notebook's path."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    out = root / "results"
    nb = load_notebook_node(str(REPO / "notebooks" / f"{NOTEBOOK}.ipynb"))  # as papermill reads it
    nb = parameterize_notebook(nb, {**PARAMETERS, "output_dir": str(out), "sweep_dir": str(root / "sweeps")})
    nb.metadata.pop("papermill", None)
    path = root / f"{NOTEBOOK}.ipynb"
    nbformat.write(nb, path)
    for name, value in LAB_SETTINGS.items():
        (root / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "settings" / name).write_text(json.dumps(value))
    return path


def _chrome(chromium: str, driver: str, window: tuple[int, int] = (1400, 2200)):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # no sandbox: CI containers run as root, where Chromium's sandbox refuses to start
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={window[0]},{window[1]}"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(driver))


def _wait(browser, script: str, *, timeout_s: float, what: str, poll_s: float = 0.5):
    """Poll ``script`` (JavaScript returning a value) until it is truthy; its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = browser.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s", pytrace=False)
        time.sleep(poll_s)


# JupyterLab's own objects (the server exposes them to the page: --LabApp.expose_app_in_browser)
PANEL = "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
KERNEL_IDLE = PANEL + """
const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
return !!(k && k.status === 'idle' && w.content && w.content.widgets.length);"""
RUN_STATE = PANEL + """
const cells = w.content.widgets.filter(c => c.model.type === 'code');
const outputs = cells.flatMap(c => c.model.outputs.toJSON());
const errors = outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue);
const done = cells.every(c => c.model.executionCount !== null)
  && w.sessionContext.session.kernel.status === 'idle';
return (done || errors.length) ? {errors: errors, outputs: outputs} : null;"""
IMAGES = """
const imgs = [...document.querySelectorAll('.jp-Notebook img')];
return imgs.every(i => i.complete) ? imgs.map(i => ({src: i.src.slice(0, 30), width: i.naturalWidth})) : null;"""
PAGE = """
const text = sel => [...document.querySelectorAll(sel)].map(e => e.innerText);
return {stderr: text('.jp-OutputArea-output[data-mime-type="%s"]'),
        tables: text('.jp-OutputArea-output table'),
        outputs: text('.jp-OutputArea-output').join('\\n')};""" % STDERR_MIME


@pytest.mark.slow
def test_the_main_job_in_jupyterlab_in_a_real_browser(tmp_path, smoke_root):
    chromium, driver = _browser_or_skip()
    start = time.monotonic()
    notebook = _workspace(tmp_path)
    args = ("--LabApp.expose_app_in_browser=True", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}")
    with running_lab(tmp_path, tmp_path / "jupyterlab.log", args=args, cwd=REPO,
                     env={"JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")}) as lab:
        browser = _chrome(chromium, driver)
        try:
            browser.get(f"{lab.base}/lab/tree/{notebook.name}?token={lab.token}")
            _wait(browser, KERNEL_IDLE, timeout_s=90, what="the notebook open with its kernel idle")
            browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            ran = _wait(browser, RUN_STATE, timeout_s=RUN_TIMEOUT_S, what="Run All", poll_s=1.0)
            images = _wait(browser, IMAGES, timeout_s=30, what="the images loaded")
            page = browser.execute_script(PAGE)
            for name, cell in (("notebook_top.png", "runs"), ("notebook.png", "plots")):  # the table, the figures
                browser.execute_script(PANEL + "w.content.widgets.find(c => c.model.id === arguments[0])"
                                               ".node.scrollIntoView();", cell)
                browser.save_screenshot(str(tmp_path / name))
        finally:
            browser.quit()
    print(f"browser test took {time.monotonic() - start:.0f} s; screenshot {tmp_path / 'notebook.png'}")
    assert not ran["errors"], ran["errors"]
    assert not page["stderr"], f"red boxes a reader sees: {page['stderr']}"
    assert not [o for o in ran["outputs"] if o.get("name") == "stderr"]
    # every figure the table wrote is shown, embedded, and loaded; none is a broken link
    figures = sorted(p.name for p in (tmp_path / "results").glob("*.png"))
    assert {"bars_top1.png", "bars_top5.png", "curves.png"} <= set(figures)
    assert len(images) == len(figures) and all(i["width"] > 0 for i in images), images
    assert all(i["src"].startswith("data:image/png") for i in images), images
    # the results table, the claims beside it, and the progress bar's summary in its place
    assert any("A4" in t and "A5" in t for t in page["tables"]), page["tables"]
    assert "4/4 runs finished in" in page["outputs"]
    assert (tmp_path / "notebook.png").stat().st_size > 10_000


@pytest.mark.parametrize("ci, outcome", [("1", pytest.fail.Exception), (None, pytest.skip.Exception)])
def test_a_missing_browser_fails_in_ci_and_is_skipped_elsewhere(monkeypatch, ci, outcome):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    if ci is None:
        monkeypatch.delenv("AVSF_CI", raising=False)
    else:
        monkeypatch.setenv("AVSF_CI", ci)
    with pytest.raises(outcome, match="no chromium, no chromedriver on this machine"):
        _browser_or_skip()
