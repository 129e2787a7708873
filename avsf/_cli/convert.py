"""avsf convert: a PySlowFast, Caffe2 or pytorchvideo zoo checkpoint as an avsf checkpoint."""

from __future__ import annotations

import json

HELP = "convert a SlowFast model-zoo checkpoint (PySlowFast .pyth, Caffe2 .pkl, pytorchvideo) for model.init_from"


def add_arguments(p) -> None:
    p.add_argument("file", metavar="IN", help="the zoo checkpoint")
    p.add_argument("--from", dest="fmt", required=True, choices=("pyslowfast", "caffe2", "pytorchvideo"),
                   help="its format: pyslowfast (.pyth, model_state), caffe2 (.pkl, blobs), pytorchvideo (hub .pyth)")
    p.add_argument("--preset", required=True,
                   help="the slowfast or avslowfast preset to build (`avsf presets`); the class count is the file's")
    p.add_argument("--out", required=True, metavar="OUT", help="the avsf checkpoint to write (.pt)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model override, as in `avsf train` (fine-tune with the same ones), repeatable")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the layers initialised as in training (an AVSlowFast preset's audio side); default 0")
    p.add_argument("--json", action="store_true", help="print the record of the conversion as JSON")


def run(args) -> int:
    from avsf.engine.convert import convert, summary_lines, write_checkpoint

    conversion = convert(args.file, fmt=args.fmt, preset=args.preset, overrides=args.overrides, seed=args.seed)
    path = write_checkpoint(conversion, args.out)
    record = conversion.record
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0
    overrides = "".join(f" --set {o}" for o in record["overrides"])
    notes = []
    if record["ignored_in_file"]:
        notes.append(f"{len(record['ignored_in_file'])} solver entries of the file ignored")
    if record["set_aside"]:
        notes.append(f"the file's head ({', '.join(record['set_aside'])}) not taken: this preset's is wider")
    print(f"{record['file']} ({record['format']}, sha256 {record['sha256'][:12]}) -> {path}: preset "
          f"{record['preset']}{overrides}, {record['num_classes']} classes; {record['from_source']} tensors from the "
          f"file, {record['initialised']} initialised" + "".join(f"; {n}" for n in notes))
    for line in summary_lines(record):
        print("  " + line)
    print(f"use it with: --set model.init_from={path.resolve()}")
    return 0
