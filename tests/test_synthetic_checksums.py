"""The built-in data is checked against per-file checksums shipped with avsf (issue 17).

Fast tests: a corrupted, missing or extra file is named by the check; a generation that
mismatches is made once more, then fails loudly; the CLI verifies and writes checksums.
Slow test: a fifth of the smoke data generated three times at once, in separate processes that
load the CPU for each other, is every byte the same, and the same as shipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest

from avsf.data.synthetic import GENERATOR_VERSION, SCALES, ScaleSpec, checksums, dataset, generate_dataset
from avsf.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = ScaleSpec("tiny", 48, 48, 30.0, 1.2, 1.5, 16000, 1, {"train": 1, "val": 1, "test": 1})
TINY_KEY = "tiny-seed3"


@pytest.fixture
def tiny_reference(tmp_path, monkeypatch):
    """A TINY dataset and a reference file holding its checksums, installed as the shipped one."""
    data = generate_dataset(tmp_path / "tiny", spec=TINY, seed=3, workers=1, verify=False)
    ref = tmp_path / "reference.json"
    checksums.record(data, key=TINY_KEY, generator_version=GENERATOR_VERSION, spec=asdict(TINY), path=ref)
    monkeypatch.setattr(checksums, "REFERENCE", ref)
    return data, ref


def _check(data: Path) -> checksums.Check:
    return checksums.check(data, key=TINY_KEY, generator_version=GENERATOR_VERSION, spec=asdict(TINY))


def test_check_names_corrupted_missing_and_unexpected_files(tiny_reference):
    data, _ = tiny_reference
    clean = _check(data)
    assert clean.status == "ok" and clean.problems == ()
    assert json.loads((data / "manifest.json").read_text())["checksums"]["check"] == "skipped"
    mp4s = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.mp4"))
    assert len(mp4s) == 20 * 3
    blob = bytearray((data / mp4s[0]).read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one bit
    (data / mp4s[0]).write_bytes(bytes(blob))
    (data / mp4s[1]).unlink()
    (data / "train" / "stray.txt").write_text("x")
    (data / "manifest.json").write_text("{}")  # not part of the content (it holds the generation time)
    bad = _check(data)
    assert bad.status == "mismatch" and bad.digest != clean.digest
    assert bad.problems == tuple(sorted([f"{mp4s[0]} (differs)", f"{mp4s[1]} (missing)", "train/stray.txt (unexpected)"]))
    assert mp4s[0] in bad.summary() and "3 file(s)" in bad.summary()


def test_check_does_not_apply_to_other_versions_specs_or_environments(tiny_reference, monkeypatch):
    data, _ = tiny_reference
    other = checksums.check(data, key=TINY_KEY, generator_version=GENERATOR_VERSION - 1, spec=asdict(TINY))
    assert other.status == "unchecked" and "generator version" in other.reason
    assert checksums.check(data, key="tiny-seed4", generator_version=GENERATOR_VERSION,
                           spec=asdict(TINY)).status == "unchecked"
    monkeypatch.setattr(checksums, "environment", lambda: {**checksums.load_reference()["datasets"][TINY_KEY]["environment"],
                                                            "av": "0.0"})
    env = _check(data)
    assert env.status == "unchecked" and "'av': (" in env.reason and "pip install -e ." in env.reason


def test_a_mismatching_generation_is_made_once_more_then_fails_loudly(tiny_reference, monkeypatch, tmp_path):
    _, _ = tiny_reference
    real = dataset._write_all
    calls = []

    def corrupting(tmp, **kw):  # the first `bad` generations write one wrong byte
        clips = real(tmp, **kw)
        calls.append(1)
        if len(calls) <= bad:
            path = tmp / clips[0]["path"]
            path.write_bytes(path.read_bytes()[:-1] + b"\0")
        return clips

    monkeypatch.setattr(dataset, "_write_all", corrupting)
    bad = 1
    with pytest.warns(UserWarning, match="generating it once more"):
        out = generate_dataset(tmp_path / "again", spec=TINY, seed=3, workers=1)
    assert len(calls) == 2 and json.loads((out / "manifest.json").read_text())["checksums"]["check"] == "ok"
    assert _check(out).status == "ok"
    calls.clear()
    bad = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match=r"twice .* 1 file\(s\) differ .*train/.*\.mp4 \(differs\).*--write-checksums"):
            generate_dataset(tmp_path / "never", spec=TINY, seed=3, workers=1)
    assert len(calls) == 2 and not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]  # no temp folder left


def test_cli_verifies_a_folder_and_writes_checksums(tmp_path, monkeypatch, capsys):
    from avsf.cli import main

    monkeypatch.setitem(SCALES, "tiny", TINY)
    ref = tmp_path / "reference.json"
    monkeypatch.setattr(checksums, "REFERENCE", ref)
    out = tmp_path / "tiny"
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--seed", "3", "--write-checksums"]) == 0
    entry = json.loads(ref.read_text())["datasets"][TINY_KEY]
    assert entry["generator_version"] == GENERATOR_VERSION and entry["files"] == checksums.file_checksums(out)
    assert entry["digest"] in capsys.readouterr().out
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--seed", "3", "--verify"]) == 0
    assert f"ok (digest {entry['digest']})" in capsys.readouterr().out
    (out / "val.csv").write_text("")
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--seed", "3", "--verify"]) == 2
    assert "val.csv (differs)" in capsys.readouterr().err
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--seed", "4", "--verify"]) == 2
    assert "does not hold" in capsys.readouterr().err


def test_the_default_seed_of_smoke_ships_checksums():
    from avsf.data.synthetic import detection

    datasets = checksums.load_reference()["datasets"]
    entry = datasets["smoke-seed0"]
    assert entry["generator_version"] == GENERATOR_VERSION and entry["spec"] == asdict(SCALES["smoke"])
    expected = sum(SCALES["smoke"].clips_per_class.values()) * 20 + 4  # the clips, 3 csv files, classnames.json
    assert len(entry["files"]) == expected and entry["digest"] == checksums.digest(entry["files"])
    ava = datasets["ava-smoke-seed0"]
    assert ava["generator_version"] == detection.GENERATOR_VERSION and ava["spec"] == asdict(detection.SCALES["smoke"])
    assert sum(p.startswith("videos/") for p in ava["files"]) == sum(detection.SCALES["smoke"].videos.values())


# --- three generations, byte for byte ---------------------------------------------------------
# A fifth of the smoke data (clip i of a split is the same clip whatever the split sizes): its
# clips are a subset of the shipped smoke files, at a fifth of the cost (~35 CPU-s each).
SUBSET = {"train": 8, "val": 4, "test": 10}
_GENERATE = """
import sys, warnings
from dataclasses import replace
if sys.argv[2] == "torch":  # another thread count and some training first: must not matter
    import torch
    torch.set_num_threads(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(10):
        loss = net(torch.randn(16, 3, 24, 24)).square().mean()
        opt.zero_grad(); loss.backward(); opt.step()
from avsf.data.synthetic import SCALES, generate_dataset
warnings.simplefilter("ignore")  # another spec than the shipped one: its own check is "unchecked"
generate_dataset(sys.argv[1], spec=replace(SCALES["smoke"], clips_per_class=%r), seed=0, workers=1)
""" % SUBSET


@pytest.mark.slow
def test_smoke_data_is_the_same_bytes_in_every_generation(tmp_path):
    """Three generations of a fifth of the smoke data at once, so each runs under the others'
    load; one after torch trained on 3 threads, and each under another heap filling
    (MALLOC_PERTURB_, glibc). Every clip is the same bytes in all three, and as shipped."""
    runs = {"plain": {}, "torch": {"MALLOC_PERTURB_": "85"}, "perturbed": {"MALLOC_PERTURB_": "170"}}
    procs = {}
    for name, extra in runs.items():
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"} | {"PYTHONPATH": str(REPO), **extra}
        procs[name] = subprocess.Popen([sys.executable, "-c", _GENERATE, str(tmp_path / name), name], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logs = {name: proc.communicate(timeout=1800)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}: {logs[name][-2000:]}"
    sums = {name: checksums.file_checksums(tmp_path / name) for name in runs}
    clips = sorted(p for p in sums["plain"] if p.endswith(".mp4"))
    assert len(clips) == sum(SUBSET.values()) * 20
    for name in runs:
        differ = sorted(p for p in sums["plain"].keys() | sums[name].keys() if sums["plain"].get(p) != sums[name].get(p))
        assert not differ, f"{name} differs from plain in {len(differ)} files: {differ[:8]}"
    reference = checksums.load_reference()["datasets"]["smoke-seed0"]
    if checksums.environment() == reference["environment"]:
        shipped = {p: reference["files"].get(p) for p in [*clips, "classnames.json"]}
        assert {p: sums["plain"][p] for p in shipped} == shipped
