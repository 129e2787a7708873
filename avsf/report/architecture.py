"""Table 1: per-stage output shapes of the scale's presets, params and GFLOPs of every preset."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from avsf.report.archive import record_table
from avsf.report.params import Params
from avsf.report.tables import to_markdown

ARCHITECTURE_PRESETS = {
    "smoke": ("slowfast_tiny", "avslowfast_tiny", "audio_only_tiny"),
    "small": ("slowfast_r50_4x16", "avslowfast_r50_4x16", "audio_only_r50"),
    "paper": ("slowfast_r50_4x16", "avslowfast_r50_4x16", "audio_only_r50"),
}
REFERENCE_TOLERANCE = 0.01  # our counts match REFERENCE.md's within 1 %


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


def compute_table() -> pd.DataFrame:
    """Params and GFLOPs at crops 224 and 256 of every Kinetics preset, beside the reference."""
    from avsf.flops import count_model  # noqa: PLC0415
    from avsf.presets import get_preset, list_presets  # noqa: PLC0415

    ref = reference_compute().set_index("preset")
    rows = []
    for name in list_presets():
        cfg = get_preset(name)
        if cfg.data.dataset not in ("kinetics", "synthetic"):
            continue
        model = counted_model(cfg)
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


def build_architecture(params: Params):
    """Table 1: stage shapes of the scale's presets and the compute of every preset."""
    from avsf.report.build import Result  # noqa: PLC0415 (build imports this module)

    exp = params.experiment
    out = Path(params.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    compute = compute_table()
    compute.to_csv(out / "table.csv", index=False)
    provenance = record_table(pd.DataFrame(), params=params)  # provenance.json; Table 1 has no runs
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
