"""avsf check-data and avsf inspect: every bad file found and named, crashes and hangs contained."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from media_helpers import write_clip

from avsf.cli import main
from avsf.data.check import scan_dataset
from avsf.data.decode import FAULT_ENV
from avsf.presets import get_preset


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A Kinetics-format folder with one file of every kind of problem."""
    root = tmp_path_factory.mktemp("messy")
    write_clip(root / "good.mp4")
    write_clip(root / "crash.mp4")
    write_clip(root / "hang.mp4")
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(bytes(range(256)) * 20)
    cut = write_clip(root / "truncated.mkv", seconds=6.0, audio=False)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])
    write_clip(root / "sound.m4a", video=False)
    write_clip(root / "silent.mp4", audio=False)
    names = ["good.mp4", "crash.mp4", "hang.mp4", "empty.mp4", "garbage.mp4", "truncated.mkv", "sound.m4a",
             "silent.mp4", "missing.mp4"]
    lines = [f"{n} 0" for n in names] + ["no_label_here", "good.mp4 zero"]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def _paths(report, key):
    return sorted(d["path"].rsplit("/", 1)[-1] for d in report.files[key])


def test_scan_reports_every_problem(messy, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "abort=crash.mp4;hang=hang.mp4")
    report = scan_dataset(dataset="kinetics", root=str(messy), split_file=str(messy / "train.csv"),
                          workers=2, timeout_s=3.0)
    assert report.listed == 11 and report.ok == 1
    assert _paths(report, "missing") == ["missing.mp4"]
    assert _paths(report, "zero_length") == ["empty.mp4"]
    assert _paths(report, "unreadable") == ["garbage.mp4"]
    assert _paths(report, "crashed") == ["crash.mp4"]
    assert _paths(report, "timeout") == ["hang.mp4"]
    assert _paths(report, "truncated") == ["truncated.mkv"]
    assert _paths(report, "no_video") == ["sound.m4a"]
    assert _paths(report, "no_audio") == ["silent.mp4", "truncated.mkv"]
    assert [b["line"] for b in report.bad_lines] == [10, 11]
    crash = report.files["crashed"][0]["reason"]
    assert "SIGABRT" in crash
    assert "decodes to" in report.files["truncated"][0]["reason"]


def test_check_data_cli_json_and_table(messy, capsys):
    assert main(["check-data", "--root", str(messy), "--csv", str(messy / "train.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["missing"] == 1 and out["counts"]["bad_label_lines"] == 2
    assert out["counts"]["unreadable"] == 1 and out["ok"] == 3  # crash/hang files are fine without faults
    assert main(["check-data", "--root", str(messy), "--csv", str(messy / "train.csv")]) == 0
    table = capsys.readouterr().out
    assert "zero_length" in table and "garbage.mp4" in table and "line 10" in table


def test_check_data_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["check-data", "--root", str(tmp_path), "--csv", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.csv" in err[0]


def test_inspect_prints_what_the_loader_sees(messy, capsys):
    assert main(["inspect", str(messy / "good.mp4"), "--preset", "avslowfast_tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["duration_s"] == pytest.approx(2.0, abs=0.05) and out["fps"] == 30.0 and out["num_frames"] == 60
    assert out["has_audio"] is True and out["sample_rate"] == 16000 and out["channels"] == 1
    crop = get_preset("avslowfast_tiny").data.train_crop
    assert out["video_shapes"] == {"slow": [3, 4, crop, crop], "fast": [3, 16, crop, crop]}
    assert out["audio_shape"] == [1, 64, 40]


def test_inspect_unreadable_and_crashing_files_exit_2_without_traceback(messy):
    env_run = dict(capture_output=True, text=True, timeout=120)
    bad = subprocess.run([sys.executable, "-m", "avsf", "inspect", str(messy / "garbage.mp4"), "--json"], **env_run)
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "garbage.mp4" in lines[0] and "Traceback" not in bad.stderr


def test_inspect_crash_is_contained(messy, monkeypatch, capsys):
    monkeypatch.setenv(FAULT_ENV, "abort=crash.mp4")
    assert main(["inspect", str(messy / "crash.mp4"), "--preset", "avslowfast_tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "crash.mp4" in err[0] and "SIGABRT" in err[0]
