"""A JupyterLab server for tests: localhost, a free port, a token, no browser of its own."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest
import requests

from avsf.engine.distributed import free_port


class Lab(NamedTuple):
    base: str  # http://127.0.0.1:<port>
    headers: dict[str, str]  # the token, for the REST API
    token: str


@contextlib.contextmanager
def running_lab(root: Path, log: Path, *, args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                cwd: Path | None = None, start_timeout_s: float = 90.0) -> Iterator[Lab]:
    """``jupyter lab`` serving ``root`` (its output to ``log``) until the block ends; fails the
    test with the log's tail when it does not answer within ``start_timeout_s``."""
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0", *args]
    if os.geteuid() == 0:  # CI containers run as root; JupyterLab refuses that unless told
        cmd.append("--allow-root")
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd or root,
                                env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {token}"}
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if requests.get(f"{base}/api/status", headers=headers, timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Lab(base, headers, token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
