"""The loader: deterministic sharded order, exact resume, and surviving bad files."""

from __future__ import annotations

import pytest
import torch
from media_helpers import tiny_cfg, write_kinetics

from avsf.data import build_dataset, build_loader
from avsf.data.decode import FAULT_ENV, DecodeError
from avsf.data.loader import batch_plan


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AVSF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_kinetics(tmp_path_factory.mktemp("k"), classes=["a", "b", "c", "d"], per_class=2, seconds=1.5,
                          splits=("train",))


def _ids(loader):
    return [b["video_index"].tolist() for b in loader]


def test_batch_plan_is_deterministic_sharded_and_complete():
    a = batch_plan(num_items=10, batch_size=2, shuffle=True, seed=1, epoch=3, rank=0, world_size=1, drop_last=False)
    assert a == batch_plan(num_items=10, batch_size=2, shuffle=True, seed=1, epoch=3, rank=0, world_size=1, drop_last=False)
    assert a != batch_plan(num_items=10, batch_size=2, shuffle=True, seed=1, epoch=4, rank=0, world_size=1, drop_last=False)
    assert sorted(i for b in a for i in b) == list(range(10))
    shards = [[i for b in batch_plan(num_items=10, batch_size=2, shuffle=True, seed=1, epoch=3, rank=r, world_size=3,
                                     drop_last=False) for i in b] for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded to 12 so every rank has as many
    assert set().union(*map(set, shards)) == set(range(10))
    dropped = [[i for b in batch_plan(num_items=10, batch_size=2, shuffle=True, seed=1, epoch=3, rank=r, world_size=3,
                                      drop_last=True) for i in b] for r in range(3)]
    assert all(len(s) == 2 for s in dropped) and len(set().union(*map(set, dropped))) == 6  # disjoint, 9 -> 3 x 2 x 1


def test_same_batches_with_and_without_workers_and_exact_resume(root):
    ds = build_dataset(tiny_cfg(root), "train")
    ds.set_epoch(0, 4)
    kw = dict(batch_size=3, shuffle=True, seed=5, epoch=0, drop_last=False)
    main = list(build_loader(ds, num_workers=0, **kw))
    workers = list(build_loader(ds, num_workers=2, **kw))
    assert [b["video_index"].tolist() for b in main] == [b["video_index"].tolist() for b in workers]
    for x, y in zip(main, workers):
        assert torch.equal(x["fast"], y["fast"]) and torch.equal(x["audio_neg"], y["audio_neg"])
    resumed = list(build_loader(ds, num_workers=2, start_batch=2, **kw))
    assert [b["video_index"].tolist() for b in resumed] == [b["video_index"].tolist() for b in main[2:]]
    assert torch.equal(resumed[0]["fast"], main[2]["fast"])
    assert "_failures" not in main[0]


def test_decode_failure_is_replaced_and_listed_or_raises_when_strict(root, tmp_path):
    import shutil

    copy = tmp_path / "k"
    shutil.copytree(root, copy)
    ds = build_dataset(tiny_cfg(copy), "train")
    strict = build_dataset(tiny_cfg(copy, overrides=["data.decode_failure=strict"]), "train")
    gone = ds.records[3].path
    (copy / gone.split(str(copy) + "/")[1]).unlink()  # vanishes after the datasets were built
    loader = build_loader(ds, batch_size=4, num_workers=0, shuffle=False, seed=0, epoch=0, drop_last=False)
    batches = list(loader)
    assert sum(len(b["video_index"]) for b in batches) == 8
    assert len(loader.failures) == 1 and loader.failures[0].startswith(gone) and "not found" in loader.failures[0]
    assert 3 not in [i for b in batches for i in b["video_index"].tolist()]
    with pytest.raises(DecodeError, match="strict"):
        list(build_loader(strict, batch_size=4, num_workers=0, shuffle=False, seed=0, epoch=0, drop_last=False))


def test_a_file_that_kills_its_worker_costs_one_sample(root, monkeypatch):
    ds = build_dataset(tiny_cfg(root), "train")
    ds.set_epoch(0, 4)
    kw = dict(batch_size=4, shuffle=True, seed=0, epoch=0, drop_last=False)
    clean = _ids(build_loader(ds, num_workers=2, **kw))
    victim = ds.records[5].path
    monkeypatch.setenv(FAULT_ENV, f"abort={victim.rsplit('/', 2)[-2]}/{victim.rsplit('/', 1)[-1]}")
    loader = build_loader(ds, num_workers=2, **kw)
    got = _ids(loader)
    assert len(loader.crashes) == 1 and loader.crashes[0].startswith(victim) and "SIGABRT" in loader.crashes[0]
    assert 5 in ds.blocked and any(f.startswith(victim) for f in loader.failures)
    # same batches, except that the killer's sample was replaced by another video
    assert [len(b) for b in got] == [len(b) for b in clean]
    diff = [(x, y) for bx, by in zip(clean, got) for x, y in zip(bx, by) if x != y]
    assert diff and all(x == 5 and y != 5 for x, y in diff)
    # later epochs skip it without another crash
    again = build_loader(ds, num_workers=2, **dict(kw, epoch=1))
    assert 5 not in [i for b in _ids(again) for i in b] and again.crashes == []


def test_a_hanging_decode_is_killed_and_skipped(root, monkeypatch):
    ds = build_dataset(tiny_cfg(root, overrides=["data.decode_timeout_s=2.0"]), "train")
    victim = ds.records[2].path
    monkeypatch.setenv(FAULT_ENV, f"hang={victim.rsplit('/', 2)[-2]}/{victim.rsplit('/', 1)[-1]}")
    loader = build_loader(ds, batch_size=4, num_workers=2, shuffle=False, seed=0, epoch=0, drop_last=False)
    got = [i for b in _ids(loader) for i in b]
    assert len(got) == 8 and 2 not in got
    assert len(loader.crashes) == 1 and loader.crashes[0].startswith(victim) and "hang" in loader.crashes[0]


def test_a_worker_death_under_strict_policy_raises_naming_the_file(root, monkeypatch):
    ds = build_dataset(tiny_cfg(root, overrides=["data.decode_failure=strict"]), "train")
    victim = ds.records[1].path
    monkeypatch.setenv(FAULT_ENV, f"abort={victim.rsplit('/', 2)[-2]}/{victim.rsplit('/', 1)[-1]}")
    with pytest.raises(DecodeError, match=victim.rsplit("/", 1)[-1]):
        list(build_loader(ds, batch_size=4, num_workers=1, shuffle=False, seed=0, epoch=0, drop_last=False))


def test_bench_data_reports_the_floor_and_the_loader(root):
    from avsf.data.bench import bench_data, format_report

    r = bench_data(root=str(root), preset="avslowfast_tiny", workers=2, clips=8, rounds=1)
    crop = tiny_cfg(root).data.train_crop
    assert r["clips"] == 8 and r["clip"]["shapes"]["fast"] == [3, 16, crop, crop]
    for key in ("floor_clips_per_s", "floor_tuned_clips_per_s", "loader_main_clips_per_s",
                "loader_1_worker_clips_per_s", "loader_n_workers_clips_per_s", "cost_vs_floor_cpu"):
        assert r[key] > 0, key
    cpu = r["cpu_ms_per_clip"]
    assert r["cost_vs_floor_cpu"] == pytest.approx(cpu["loader_main"] / cpu["floor_plain"])
    text = format_report(r)
    assert "bare PyAV loop (floor)" in text and "2 workers" in text
