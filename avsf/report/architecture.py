"""Table 1: per-stage output shapes of the scale's presets, params and GFLOPs of every preset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from avsf.report.archive import is_render_only, record_table, runs_dir
from avsf.report.params import Params
from avsf.report.tables import to_markdown

ARCHITECTURE_PRESETS = {
    "smoke": ("slowfast_tiny", "avslowfast_tiny", "audio_only_tiny"),
    "small": ("slowfast_r50_4x16", "avslowfast_r50_4x16", "audio_only_r50"),
    "paper": ("slowfast_r50_4x16", "avslowfast_r50_4x16", "audio_only_r50"),
}
REFERENCE_TOLERANCE = 0.01  # our counts match REFERENCE.md's within 1 %
COUNT_COLUMNS = ("classes", "params (M)", "GFLOPs @224", "GFLOPs @256", "audio GFLOPs @256")  # counted, not looked up

if TYPE_CHECKING:
    from avsf.config import RunConfig


def reference_compute() -> pd.DataFrame:
    """REFERENCE.md's params and GFLOPs (fvcore convention) of the paper-size presets."""
    return pd.read_csv(Path(__file__).resolve().parent.parent / "resources" / "reference_compute.csv")


def stage_table(preset: str, *, crop: int | None = None) -> pd.DataFrame:
    """Per-stage output shapes of a preset (the paper's Table 1 layout)."""
    from avsf.models.network import describe_stages  # noqa: PLC0415
    from avsf.presets import get_preset  # noqa: PLC0415

    cfg = get_preset(preset)
    rows = describe_stages(cfg.model, crop or cfg.data.train_crop)
    table = pd.DataFrame(rows, columns=["stage", "pathway", "shape"])
    table["shape"] = [" x ".join(map(str, s)) for s in table["shape"]]
    return table.pivot_table(index="stage", columns="pathway", values="shape", aggfunc="first", sort=False) \
        .reset_index().fillna("")


def counted_model(cfg):
    """The model a preset trains: presets that take the class count from the built-in dataset
    (``num_classes=0``) are counted with its class count, as the trainer resolves them."""
    if cfg.model.num_classes > 0:
        return cfg.model
    from avsf.data.synthetic import CLASSES  # noqa: PLC0415

    return cfg.with_overrides([f"model.num_classes={len(CLASSES)}"]).model


def counted_presets() -> list[tuple[str, "RunConfig"]]:
    """Every Kinetics-format preset (and the built-in data's) as counted: its config with the
    class count the trainer resolves (:func:`counted_model`)."""
    from avsf.presets import get_preset, list_presets  # noqa: PLC0415

    counted = []
    for name in list_presets():
        cfg = get_preset(name)
        if cfg.data.dataset in ("kinetics", "synthetic"):
            counted.append((name, cfg.with_overrides({"model.num_classes": counted_model(cfg).num_classes})))
    return counted


def compute_table(counted: list[tuple[str, "RunConfig"]] | None = None) -> pd.DataFrame:
    """Params and GFLOPs at crops 224 and 256 of every counted preset, beside the reference."""
    from avsf.flops import count_model  # noqa: PLC0415

    ref = reference_compute().set_index("preset")
    rows = []
    for name, cfg in counted if counted is not None else counted_presets():
        model = cfg.model
        c224, c256 = count_model(model, 224), count_model(model, 256)
        rec = {"preset": name, "classes": model.num_classes, "params (M)": round(c256["params"] / 1e6, 2),
               "GFLOPs @224": round(c224["gflops"], 2), "GFLOPs @256": round(c256["gflops"], 2),
               "audio GFLOPs @256": round(c256["gflops_audio"], 2)}
        if name in ref.index:
            r = ref.loc[name]
            rec.update({"ref params (M)": r["params_m"], "ref GFLOPs @224": r["gflops_224"],
                        "ref GFLOPs @256": r["gflops_256"]})
            pairs = [(rec["params (M)"], r["params_m"]), (rec["GFLOPs @224"], r["gflops_224"]),
                     (rec["GFLOPs @256"], r["gflops_256"])]
            ok = all(abs(a - b) <= REFERENCE_TOLERANCE * b for a, b in pairs)
            rec["matches reference (1 %)"] = "yes" if ok else "no"
        else:
            rec["matches reference (1 %)"] = "no reference"
        rows.append(rec)
    return pd.DataFrame.from_records(rows).fillna("")


def archive_counts(compute: pd.DataFrame, counted: list[tuple[str, "RunConfig"]], out: Path) -> None:
    """What each row of the compute table was counted from, beside the table: runs/<preset>/
    config.json (the config counted) and counts.json (the row's numbers and how they were
    counted); no metrics.jsonl, as nothing is trained. A rerun replaces the whole folder."""
    import shutil  # noqa: PLC0415

    root = runs_dir(out)
    shutil.rmtree(root, ignore_errors=True)
    rows = json.loads(compute.set_index("preset")[list(COUNT_COLUMNS)].to_json(orient="index"))  # column types kept
    for name, cfg in counted:
        run = root / name
        run.mkdir(parents=True)
        (run / "config.json").write_text(cfg.to_json() + "\n")
        counts = {"preset": name, "counter": "fvcore (a multiply-add is one FLOP), one view, batch 1",
                  **rows[name]}
        (run / "counts.json").write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")


def build_architecture(params: Params):
    """Table 1: stage shapes of the scale's presets and the compute of every preset."""
    from avsf.report.build import Result  # noqa: PLC0415 (build imports this module)

    exp = params.experiment
    out = Path(params.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    counted = counted_presets()
    compute = compute_table(counted)
    compute.to_csv(out / "table.csv", index=False)
    if not is_render_only(output_dir=out, sweep_dir=params.sweep_dir):
        archive_counts(compute, counted, out)
    provenance = record_table(pd.DataFrame(), params=params)  # provenance.json (no trained runs)
    md = [f"# {exp.artifact}: {exp.title}", "", provenance, "", exp.note, "",
          "## Params and GFLOPs per view beside REFERENCE.md", "",
          "Presets that take the class count from the dataset are counted with the built-in dataset's "
          "classes (the `classes` column), as the trainer resolves them.", "", to_markdown(compute)]
    for preset in ARCHITECTURE_PRESETS[params.scale]:
        stages = stage_table(preset)
        stages.to_csv(out / f"stages_{preset}.csv", index=False)
        md += [f"## Stage output shapes of `{preset}` (C x T x H x W; audio C x T x F)", "", to_markdown(stages)]
    (out / "table.md").write_text("\n".join(md))
    empty = pd.DataFrame()
    return Result(runs=empty, summary=empty, rows=compute, claims=empty, figures=[],
                  markdown=(out / "table.md").read_text(), out_dir=out)
