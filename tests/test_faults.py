"""The faults a cluster user meets (issue 18): each ends the run with a one-line reason that
`avsf status` shows, loses nothing already written, and a rerun resumes once the cause is gone.

Real faults where this machine allows them (a 14 MB tmpfs as root, files deleted under a running
trainer, a Slurm job over its --mem in tests/test_slurm.py); injected ones where it does not
(an OSError with ENOSPC from the writer, CUDA's out-of-memory error from the step).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avsf import launch
from avsf.engine import checkpoint as C
from avsf.engine import io as fio
from avsf.engine.io import DiskFullError
from avsf.errors import UserError
from avsf.presets import get_preset
from test_launch import _starts  # the fake job's starts, counted as test_launch counts them

REPO = Path(__file__).resolve().parents[1]
FAKE_JOB = f"{REPO / 'tests' / 'test_launch.py'}:fake_train"


def _no_space(errno_: int = errno.ENOSPC):
    def write(f, data):
        f.write(bytes(data)[: len(data) // 2])  # part of it lands, then the disk is full
        raise OSError(errno_, os.strerror(errno_))
    return write


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((4,), float(step))}, "optimizer": {}, "step": step, "epoch": 0,
            "batch_in_epoch": step, "rng": C.capture_rng_state()}


# --- full disk or quota (injected) ------------------------------------------------------------
@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "quota exceeded")])
def test_a_full_disk_at_a_checkpoint_names_file_and_sizes_and_keeps_the_last_good_one(tmp_path, monkeypatch,
                                                                                     code, words):
    C.save_checkpoint(_state(1), ckpt_dir=tmp_path, keep=2)
    monkeypatch.setattr(fio, "_write_all", _no_space(code))
    with pytest.raises(DiskFullError) as caught:
        C.save_checkpoint(_state(2), ckpt_dir=tmp_path, keep=2)
    message = str(caught.value)
    assert words in message and "ckpt-000000002.pt" in message and "\n" not in message
    assert caught.value.needed is not None and caught.value.needed > 1000  # the serialized checkpoint's size
    assert f"free there" in message and caught.value.free is not None
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000001.pt"]  # no temporary file left
    state, path = C.load_latest(tmp_path)
    assert state["step"] == 1
    # the run's one-line reason in `avsf status` is the message itself
    assert launch.exception_reason(caught.value) == message


def test_metrics_written_before_a_full_disk_stay_valid_json_lines(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    fio.write_jsonl(path, [{"epoch": 1, "loss": 2.0}])
    monkeypatch.setattr(fio, "_write_all", _no_space())
    with pytest.raises(DiskFullError, match="metrics.jsonl"):
        fio.write_jsonl(path, [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"epoch": 1, "loss": 2.0}]
    with pytest.raises(DiskFullError, match="final.json"):
        fio.atomic_write_json(tmp_path / "final.json", {"top1": 1.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_a_figure_of_results_on_a_full_disk_keeps_the_old_one(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avsf.report import plots

    target = tmp_path / "curves.png"
    plots._save(plt.figure(), target)
    before = target.read_bytes()
    monkeypatch.setattr(fio, "_write_all", _no_space())
    with pytest.raises(DiskFullError, match="curves.png"):
        plots._save(plt.figure(figsize=(3, 2)), target)
    plt.close("all")
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_other_os_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def broken(f, data):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(fio, "_write_all", broken)
    with pytest.raises(OSError) as caught:
        fio.atomic_write_text(tmp_path / "x.txt", "x")
    assert not isinstance(caught.value, DiskFullError)


# --- full disk on a real 14 MB tmpfs (one 8.9 MiB checkpoint fits, not two), end to end ----------
TRAIN = ["--preset", "avslowfast_tiny", "--seed", "0",
         "--set", f"data.synthetic_root={REPO / 'data' / 'synthetic'}", "--set", "solver.epochs=1",
         "--set", "solver.batch_size=8", "--set", "solver.reference_batch=8", "--set", "data.limit_videos=40",
         "--set", "checkpoint_every=1", "--set", "keep_checkpoints=2", "--set", "eval_every=100",
         "--set", "data.num_temporal_views=1", "--set", "data.num_workers=0"]


def _train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avsf", "train", *TRAIN, *extra, "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (the injected full-disk tests above run everywhere)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=14m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"this machine refuses a tmpfs mount ({proc.stderr.strip()}); the injected tests run everywhere")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_training_run_on_a_full_disk_stops_with_the_reason_and_resumes_once_there_is_room(smoke_root, small_tmpfs):
    run = small_tmpfs / "run"
    proc = _train(run)
    assert proc.returncode == 2, proc.stderr[-3000:]
    reason = proc.stderr.strip().splitlines()[-1]
    assert "disk full (no space left on device) writing" in reason and "ckpt-" in reason, reason
    assert "needed" in reason and "free there" in reason and "Traceback" not in proc.stderr
    kept = C.list_checkpoints(run / "checkpoints")
    assert kept and not list((run / "checkpoints").glob(".*.tmp"))
    state, newest = C.load_latest(run / "checkpoints")  # the newest file is a whole, valid checkpoint
    assert newest == kept[-1]
    for name in ("metrics.jsonl",):
        if (run / name).exists():
            [json.loads(line) for line in (run / name).read_text().splitlines()]
    # room again: the same command resumes from that checkpoint and finishes
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    again = _train(run)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {newest}" in again.stderr and (run / "final.json").is_file()


# --- out of memory in the step (CUDA's error injected on the CPU) -------------------------------
def test_out_of_memory_in_a_step_names_the_batch_and_crop_and_what_to_lower(smoke_root, tmp_path, monkeypatch):
    from avsf.engine import train as T

    def too_big(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(T.Trainer, "_train_step", too_big)
    cfg = get_preset("avslowfast_tiny").with_overrides({
        "data.synthetic_root": str(smoke_root.parent), "solver.batch_size": 8, "solver.reference_batch": 8,
        "data.limit_videos": 16, "data.num_workers": 0, "solver.epochs": 1})
    with pytest.raises(T.OutOfMemory) as caught:
        T.train(cfg, tmp_path / "run")
    message = str(caught.value)
    assert "out of memory on cpu at step 0" in message and "solver.batch_size=8 per process" in message
    assert f"data.train_crop={cfg.data.train_crop}" in message and "Lower solver.batch_size" in message
    assert isinstance(caught.value, UserError) and launch.exception_reason(caught.value) == message
    assert T.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"))
    assert not T.is_out_of_memory(RuntimeError("shape mismatch"))


# --- the data going away mid-run ---------------------------------------------------------------
def _copy_subset(smoke_root: Path, dest: Path, videos: int) -> Path:
    """A dataset folder with the first `videos` training videos (and a few val/test ones)."""
    dest.mkdir()
    shutil.copy(smoke_root / "classnames.json", dest)
    for split, n in (("train", videos), ("val", 4), ("test", 4)):
        lines = [ln for ln in (smoke_root / f"{split}.csv").read_text().splitlines() if ln.strip()][:n]
        for line in lines:
            rel = line.split()[0]
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(smoke_root / rel, dest / rel)
        (dest / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return dest


def test_files_vanishing_mid_run_stop_it_with_the_reason_and_a_rerun_resumes(smoke_root, tmp_path):
    data = _copy_subset(smoke_root, tmp_path / "share", videos=96)
    backup = tmp_path / "backup"
    shutil.copytree(data, backup)
    run = tmp_path / "run"
    args = ["--set", f"data.root={data}", "--set", "data.dataset=synthetic", "--set", "data.limit_videos=0",
            "--set", "solver.epochs=2"]
    cmd = [sys.executable, "-m", "avsf", "train", *TRAIN, *args, "--out", str(run)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not C.list_checkpoints(run / "checkpoints"):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    media = sorted(p for p in data.rglob("*.mp4"))
    for p in media[::2]:  # half the share goes away under the running trainer
        p.unlink()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    reason = err.strip().splitlines()[-1]
    assert "the data seems to have gone away" in reason and "Traceback" not in err, reason
    print(reason)  # which of the two checks fired: the epoch's failed fraction, or ten failures in a row
    assert ("data.max_failed_fraction=0.25" in reason) or ("files in a row failed" in reason), reason
    assert not (run / "final.json").exists()
    newest = C.list_checkpoints(run / "checkpoints")[-1]
    shutil.rmtree(data)
    shutil.copytree(backup, data)  # the share is back
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {newest}" in again.stderr and (run / "final.json").is_file()


def test_the_failed_fraction_is_judged_per_epoch_after_enough_reads(tmp_path):
    from avsf.data.datasets.base import DataGoneError
    from avsf.engine import train as T

    class Loader:
        def __init__(self, failed):
            self.failures, self.crashes = [f"/share/v{k}.mp4: No such file or directory" for k in range(failed)], []

    trainer = T.Trainer.__new__(T.Trainer)  # only what the check reads
    trainer.cfg = get_preset("avslowfast_tiny")
    trainer.device, trainer.epoch, trainer.run_dir = torch.device("cpu"), 0, tmp_path
    trainer._check_data_present(Loader(40), delivered=20)  # 60 reads: too few to judge
    trainer._check_data_present(Loader(20), delivered=60)  # 25 % of 80: at the limit, not past it
    with pytest.raises(DataGoneError, match=r"21 of 81 clip reads failed in epoch 1 \(26% > data.max_failed_fraction=0.25\)"):
        trainer._check_data_present(Loader(21), delivered=60)
    trainer.cfg = trainer.cfg.with_overrides({"data.max_failed_fraction": 1.0})
    trainer._check_data_present(Loader(80), delivered=1)  # 1 = never stop


# --- bounded retries ---------------------------------------------------------------------------
def _fail_cfg(seed: int = 0):
    return get_preset("avslowfast_tiny").with_overrides([f"seed={seed}", "solver.epochs=1", "solver.base_lr=0",
                                                        "data.root=/fail"])


def test_a_run_that_always_fails_is_given_up_after_max_attempts(tmp_path, capsys):
    cfg = _fail_cfg()
    run_dir = launch.run_dir_for(cfg, tmp_path)
    for _ in range(5):  # a notebook run five times, each resubmitting failed runs
        launch.submit([cfg], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB, retry_failed=True, verbose=False)
    assert _starts(run_dir) == 3
    row = launch.status(tmp_path).iloc[0]
    assert row["state"] == "failed" and row["failures"] == 3 and row["note"] == "given up"
    assert row["reason"].startswith("gave up after 3 failed attempts the same way (max_attempts=3")
    assert "dataset root /fail does not exist" in row["reason"]
    report = launch.submit([cfg], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB, retry_failed=True)
    assert report.submitted == [] and "gave up after 3" in report.failed[str(run_dir)]
    # raising the bound gives it exactly one more try
    launch.submit([cfg], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB, retry_failed=True, max_attempts=4,
                  verbose=False)
    assert _starts(run_dir) == 4 and launch.status(tmp_path).iloc[0]["failures"] == 4
    with pytest.raises(UserError, match="max_attempts=0 must be a positive integer"):
        launch.submit([cfg], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB, max_attempts=0)


# --- sweep directories refused before anything is submitted ------------------------------------
def test_a_read_only_sweep_directory_is_refused_before_submission(tmp_path, small_tmpfs):
    sweep = small_tmpfs / "sweeps"
    sweep.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    try:
        with pytest.raises(UserError, match=r"sweeps is read-only .*nothing was submitted"):
            launch.submit([_fail_cfg()], backend="debug", sweep_dir=sweep, job_fn=FAKE_JOB)
        with pytest.raises(UserError, match="cannot create the sweep directory .*is its filesystem mounted"):
            launch.submit([_fail_cfg()], backend="debug", sweep_dir=small_tmpfs / "new" / "sweeps", job_fn=FAKE_JOB)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)


def test_a_sweep_directory_that_cannot_be_written_is_refused_by_permission(tmp_path, monkeypatch):
    sweep = tmp_path / "sweeps"
    sweep.mkdir()
    real = Path.write_bytes

    def refuse(self, data):
        if self.name.startswith(".write-probe"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(UserError, match="read-only"):
        launch.submit([_fail_cfg()], backend="debug", sweep_dir=sweep, job_fn=FAKE_JOB)
    assert list(sweep.iterdir()) == []  # no run directory was claimed


def test_unfinished_runs_of_another_code_version_are_refused_and_finished_ones_reused(tmp_path, capsys):
    done, failed = _fail_cfg(0).with_overrides(["data.root="]), _fail_cfg(1)
    launch.submit([done, failed], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB, verbose=False)
    for cfg in (done, failed):  # another user's checkout submitted them
        path = launch.run_dir_for(cfg, tmp_path) / "launch.json"
        record = json.loads(path.read_text())
        assert record["avsf_version"] == launch.code_version()
        path.write_text(json.dumps({**record, "avsf_version": "0.0.9+gdeadbeef0000", "user": "alice"}))
    with pytest.raises(UserError, match=r"1 unfinished run\(s\) .* by 0.0.9\+gdeadbeef0000, user alice; this is "):
        launch.submit([done, failed], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB, retry_failed=True)
    assert _starts(launch.run_dir_for(failed, tmp_path)) == 1  # nothing was submitted
    report = launch.submit([done], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB)
    assert report.other_version == {str(launch.run_dir_for(done, tmp_path)): "0.0.9+gdeadbeef0000"}
    assert "finished by avsf 0.0.9+gdeadbeef0000" in capsys.readouterr().err
    report = launch.submit([failed], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB, retry_failed=True,
                           allow_other_version=True, verbose=False)
    assert report.submitted == [str(launch.run_dir_for(failed, tmp_path))]


# --- a job the kernel's OOM killer ends (a real memory cgroup, root only) ------------------------
HOG = '''
import json, time
from pathlib import Path

def hog(cfg, run_dir, **_):
    chunks = []
    for _ in range(64):  # 64 MiB every 0.05 s, up to 4 GiB: past the cgroup's limit in a second
        chunks.append(bytearray(64 * 2**20))
        time.sleep(0.05)
    (Path(run_dir) / "final.json").write_text(json.dumps({"survived": True}))
    return {}
'''

SUBMIT_IN_CGROUP = '''
import os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:  # this process and all it starts
    f.write(str(os.getpid()))
from avsf import launch
from avsf.presets import get_preset
launch.submit([get_preset("slowfast_tiny")], backend="local", sweep_dir=sys.argv[2], job_fn=sys.argv[3], verbose=False)
launch.wait(sys.argv[2], timeout_s=120, poll_s=0.2)
'''


@pytest.fixture
def memory_cgroup_of_800mb():
    own = launch.memory_cgroup()
    if os.geteuid() != 0 or own is None:
        pytest.skip("a memory cgroup of its own needs root and a visible cgroup hierarchy")
    child = own / f"avsf-test-oom-{os.getpid()}"
    try:
        child.mkdir()
        limit = "memory.limit_in_bytes" if (child / "memory.limit_in_bytes").exists() else "memory.max"
        (child / limit).write_text(str(800 * 2**20))
    except OSError as e:
        pytest.skip(f"this machine refuses a memory cgroup ({e}); the Slurm test covers --mem")
    yield child
    for _ in range(50):  # removable once its processes are gone
        try:
            child.rmdir()
            break
        except OSError:
            time.sleep(0.1)


def test_a_local_job_the_kernel_kills_for_memory_is_reported_as_out_of_memory(tmp_path, memory_cgroup_of_800mb):
    (tmp_path / "hog.py").write_text(HOG)
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-c", SUBMIT_IN_CGROUP, str(memory_cgroup_of_800mb), str(sweep),
                           f"{tmp_path / 'hog.py'}:hog"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = launch.status(sweep).iloc[0]
    assert row["state"] == "failed", row.to_dict()
    assert row["reason"].startswith("out of memory: the kernel's OOM killer ended the job at its memory cgroup's "
                                    "limit of 0.78 GiB"), row["reason"]
    assert "Lower solver.batch_size" in row["reason"]
