"""Work shared between this process and fresh interpreters: the built-in data's clips and the
Charades view's frames are rendered this way, ~2x faster on 2 cores.

Plain subprocesses (``python -m avsf.data.synthetic TASK REQUEST RESULT``) rather than
multiprocessing: spawn and forkserver re-import the caller's ``__main__`` (a script without a
main guard would generate again, and deadlock on the lock), and fork is unsafe once torch has
started its threads. Requests, results and logs go through files in a work folder (no pipe can
fill up and block a worker).
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable


def _task(name: str) -> Callable[..., list]:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def run_shared(task: str, jobs: list, *, kwargs: dict[str, Any], workers: int, work: Path) -> list:
    """``task(share, **kwargs)`` over `jobs` split `workers` ways (``jobs[k::workers]``): the first
    share here, each other in a fresh interpreter; the results of all shares, concatenated in
    share order. `task` is ``"module:function"``; its jobs, `kwargs` and result are JSON (a
    worker's job tuples arrive as lists). `work` is created for the files and removed after."""
    shares = [jobs[k::workers] for k in range(workers)]
    work.mkdir()
    procs = []
    for k, share in enumerate(shares[1:], start=1):
        (work / f"request-{k}.json").write_text(json.dumps({"jobs": share, "kwargs": kwargs}))
        with open(work / f"log-{k}.txt", "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "avsf.data.synthetic", task,
                                           str(work / f"request-{k}.json"), str(work / f"result-{k}.json")],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
    try:
        results = list(_task(task)(shares[0], **kwargs))
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    finally:
        codes = [proc.wait() for proc in procs]
    for k, code in enumerate(codes, start=1):
        if code != 0:
            log = (work / f"log-{k}.txt").read_text().strip()[-2000:]
            raise RuntimeError(f"a worker of {task} failed (exit {code}): {log}")
        results += json.loads((work / f"result-{k}.json").read_text())
    shutil.rmtree(work)
    return results


def worker_main(task: str, request_path: str, result_path: str) -> None:
    """Entry of a worker process: run `task` on the request file's share, write its result."""
    request = json.loads(Path(request_path).read_text())
    Path(result_path).write_text(json.dumps(_task(task)(request["jobs"], **request["kwargs"])))
