"""Open every notebook the way a person does: JupyterLab on localhost (no browser, a free port,
a token), the notebook read through the contents API, a kernel started through the server's
API, and the parameters and imports cells run over the kernel's websocket."""

import json
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket
from lab_server import running_lab

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(REPO, tmp_path_factory.mktemp("lab") / "jupyterlab.log") as server:
        yield server


def _execute(ws: websocket.WebSocket, code: str, *, timeout_s: float = 120.0) -> tuple[dict, list[dict]]:
    """Send one execute_request on the kernel's channels websocket; return its reply and the
    iopub messages (outputs, errors) that belong to it."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": "test",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    reply, iopub, idle = None, [], False
    deadline = time.monotonic() + timeout_s
    while reply is None or not idle:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no reply to {code[:60]!r}")
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["channel"] == "shell" and msg["msg_type"] == "execute_reply":
            reply = msg["content"]
        elif msg["channel"] == "iopub":
            iopub.append(msg)
            idle |= msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
    return reply, iopub


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_and_imports_cells_run_in_a_lab_kernel(lab, name):
    base, headers, token = lab
    got = requests.get(f"{base}/api/contents/notebooks/{name}", headers=headers, timeout=30)
    assert got.ok, got.text
    cells = got.json()["content"]["cells"]
    by_tag = {tag: c for c in cells for tag in c["metadata"].get("tags", [])}
    assert {"parameters", "imports"} <= set(by_tag)
    # the kernel starts in the notebook's folder, as when a person opens it in the lab
    kernel = requests.post(f"{base}/api/kernels", headers=headers, timeout=60,
                           json={"name": "python3", "path": "notebooks"})
    assert kernel.status_code == 201, kernel.text
    kid = kernel.json()["id"]
    ws = websocket.create_connection(
        f"{base.replace('http', 'ws')}/api/kernels/{kid}/channels?token={token}", timeout=120)
    try:
        for tag in ("parameters", "imports"):
            source = by_tag[tag]["source"]
            reply, iopub = _execute(ws, "".join(source) if isinstance(source, list) else source)
            errors = [m["content"] for m in iopub if m["msg_type"] == "error"]
            assert reply["status"] == "ok" and not errors, f"{name} {tag} cell: {reply} {errors}"
        # the validated parameters name this notebook and resolve paths against the project
        reply, iopub = _execute(ws, "print(params.notebook, params.output_dir)")
        printed = "".join(m["content"].get("text", "") for m in iopub if m["msg_type"] == "stream")
        assert printed.split() == [name[:-len(".ipynb")], str(REPO / "results" / name[:-len(".ipynb")])]
    finally:
        ws.close()
        requests.delete(f"{base}/api/kernels/{kid}", headers=headers, timeout=30)
