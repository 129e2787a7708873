"""Model-zoo checkpoints as avsf checkpoints (``avsf convert``).

Three source formats, all SlowFast (visual only):

- ``pyslowfast``: a PySlowFast training checkpoint (``.pyth``), a dict whose ``model_state``
  holds names such as ``s2.pathway0_res0.branch2.a.weight`` (pathway0 Slow, pathway1 Fast,
  ``sN_fuse`` the Fast->Slow laterals, ``head.projection`` the classifier) and whose ``cfg``
  is the YAML of the config it was trained with.
- ``caffe2``: a PySlowFast Caffe2 model-zoo pickle (``.pkl``), a dict whose ``blobs`` holds
  numpy arrays named as Caffe2 named them (``res2_0_branch2a_w``, ``t_`` for Fast,
  ``pred_w``); :func:`caffe2_to_pyslowfast` gives each its PySlowFast name.
- ``pytorchvideo``: a pytorchvideo hub checkpoint of ``create_slowfast`` (``model_state``
  with ``blocks.N.multipathway_blocks.P...`` names).

The result is one ``torch.save`` dict that :func:`avsf.engine.transfer.load_init_checkpoint`
reads (``model.init_from``): ``model`` is the strict state dict of ``build_model`` for the
preset with the source's class count; ``optimizer`` and ``rng`` are empty and ``step`` 0 (no
run made it); ``converted_from`` records the source (file name, format, sha256) and, for
every tensor, the source name it came from or None when it was initialised as in training
(``--seed``). For a SlowFast preset every tensor comes from the source (a Caffe2 pickle stores
no ``num_batches_tracked``: those are 0). For an AVSlowFast preset the Slow and Fast pathways
and the Fast->Slow laterals come from the source; the Audio pathway, the audio laterals, the
AVS projections and the head are initialised.

Foreign files are never unpickled with plain pickle: torch files load with
``weights_only=True``, Caffe2 pickles with :class:`NumpyOnlyUnpickler`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import pickle
import re
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from avsf.config import RunConfig
from avsf.engine.io import atomic_write
from avsf.errors import UserError
from avsf.models.blocks import Bottleneck3d, NonLocal3d
from avsf.models.network import AVSlowFast, build_model
from avsf.presets import get_preset, list_presets

FORMATS = ("pyslowfast", "caffe2", "pytorchvideo")
CONVERTED_KEY = "converted_from"
SHOW = 6  # keys named in an error before "... (N in all)"

_STAGE_NUMBER = {"stem": 1, "res2": 2, "res3": 3, "res4": 4, "res5": 5}
_JUNCTION_NUMBER = {"pool1": 1, "res2": 2, "res3": 3, "res4": 4}  # F->S after that stage
_PATHWAY = {"slow": 0, "fast": 1}
# a bottleneck's layers: avsf name -> (PySlowFast name, pytorchvideo name)
_BOTTLENECK = {"conv_a": ("branch2.a", "branch2.conv_a"), "bn_a": ("branch2.a_bn", "branch2.norm_a"),
               "conv_b": ("branch2.b", "branch2.conv_b"), "bn_b": ("branch2.b_bn", "branch2.norm_b"),
               "conv_c": ("branch2.c", "branch2.conv_c"), "bn_c": ("branch2.c_bn", "branch2.norm_c"),
               "shortcut.0": ("branch1", "branch1_conv"), "shortcut.1": ("branch1_bn", "branch1_norm")}
_NONLOCAL = {"theta": "conv_theta", "phi": "conv_phi", "g": "conv_g", "out": "conv_out", "bn": "bn"}
_BN_ENTRIES = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}


# --- reading the source files ---------------------------------------------------------------
@dataclasses.dataclass
class SourceCheckpoint:
    """A zoo file's weights in its framework's own names (PySlowFast names for Caffe2 too)."""

    format: str
    tensors: dict[str, Tensor]
    file_names: dict[str, str]  # tensor name -> the name in the file (a Caffe2 blob's own name)
    ignored: list[str]  # entries of the file that are not weights (Caffe2 solver blobs)
    nonlocal_instantiation: str | None  # PySlowFast's NONLOCAL.INSTANTIATION, when the file records it


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain Python containers, nothing else: a pickle that names
    any other global (``os.system``, a class to instantiate) is refused before it is called."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("collections", "OrderedDict"),
               ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
               ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise UserError(f"refusing to unpickle {module}.{name}: a Caffe2 model-zoo pickle holds only numpy "
                            f"arrays and plain containers, and anything else could run code. If this file is a "
                            f"torch checkpoint, use --from pyslowfast")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UserError("this pickle uses persistent ids, as torch's legacy format does: it is a torch file, not a "
                        "Caffe2 pickle; use --from pyslowfast")


def load_numpy_pickle(f: BinaryIO) -> Any:
    """The object of a latin-1 (Python 2) pickle of numpy arrays and plain containers."""
    try:
        return NumpyOnlyUnpickler(f, encoding="latin1").load()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated or not a pickle: one user error
        raise UserError(f"not a readable pickle ({type(e).__name__}: {e})") from None


_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of a pre-1.6 torch.save file


def read_source(path: str | Path, *, fmt: str) -> SourceCheckpoint:
    """Read a zoo checkpoint of format `fmt` (one of FORMATS). UserError when the file is not
    of that format, holds anything but weights and plain data, or has no model weights."""
    path = Path(path)
    if fmt not in FORMATS:
        raise UserError(f"--from {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise UserError(f"{path}: no such file; give a zoo checkpoint (.pyth for pyslowfast and pytorchvideo, "
                        f".pkl for caffe2)")
    if fmt == "caffe2":
        return _read_caffe2(path)
    state = _torch_load(path, fmt=fmt)
    if not isinstance(state, dict) or not isinstance(state.get("model_state"), dict):
        found = sorted(state)[:SHOW] if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path} has no 'model_state' dict (found {found}); a {fmt} checkpoint keeps its weights "
                        f"there")
    tensors = {k: v for k, v in state["model_state"].items() if isinstance(v, Tensor)}
    # a DDP-wrapped save (module.) or PySlowFast's wrapper of a pytorchvideo model (model.)
    for prefix in ("module.", "model."):
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return SourceCheckpoint(format=fmt, tensors=tensors, file_names={k: k for k in tensors}, ignored=[],
                            nonlocal_instantiation=_nonlocal_instantiation(state.get("cfg")))


def _torch_load(path: Path, *, fmt: str) -> Any:
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":  # not torch's zip format: legacy torch, or not torch at all
            f.seek(0)
            try:
                first = NumpyOnlyUnpickler(f, encoding="latin1").load()
            except Exception:  # noqa: BLE001 - anything unreadable or refused: left to the message below
                first = None
            if first != _TORCH_LEGACY_MAGIC:
                what = ("a Caffe2 pickle (a 'blobs' dict): use --from caffe2"
                        if isinstance(first, dict) and "blobs" in first else "a Caffe2 .pkl needs --from caffe2")
                raise UserError(f"{path} is not a torch file for --from {fmt}; {what}")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: refused to load ({first}); avsf loads foreign torch files only with "
                        f"weights_only=True (tensors and plain data). If it is a Caffe2 pickle, use --from caffe2")
    except Exception as e:  # noqa: BLE001 - not a torch file at all
        raise UserError(f"{path} is not a readable torch file for --from {fmt} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); a Caffe2 .pkl needs --from caffe2") from None


def _nonlocal_instantiation(cfg: Any) -> str | None:
    """NONLOCAL.INSTANTIATION of PySlowFast's config dump (YAML text), or None."""
    if not isinstance(cfg, str):
        return None
    try:
        data = yaml.safe_load(cfg)
    except yaml.YAMLError:
        return None
    value = (data or {}).get("NONLOCAL", {}).get("INSTANTIATION") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _read_caffe2(path: Path) -> SourceCheckpoint:
    with path.open("rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise UserError(f"{path} is a torch (zip) file, not a Caffe2 pickle (some zoo .pkl files are); "
                            f"use --from pyslowfast")
        f.seek(0)
        try:
            obj = load_numpy_pickle(f)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
    if isinstance(obj, int) and obj == _TORCH_LEGACY_MAGIC:
        raise UserError(f"{path} is a torch file (legacy format), not a Caffe2 pickle; use --from pyslowfast")
    if not isinstance(obj, dict) or not isinstance(obj.get("blobs"), dict):
        found = sorted(map(str, obj))[:SHOW] if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f"{path} has no 'blobs' dict (found {found}); a Caffe2 model-zoo pickle keeps its arrays "
                        f"there")
    tensors, file_names, ignored = {}, {}, []
    for blob, value in obj["blobs"].items():
        if _is_solver_blob(blob):
            ignored.append(blob)
            continue
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
            raise UserError(f"{path}: blob {blob!r} is {type(value).__name__}"
                            f"{' of ' + str(value.dtype) if isinstance(value, np.ndarray) else ''}, not a numeric "
                            f"array")
        name = caffe2_to_pyslowfast(blob)
        tensors[name] = torch.from_numpy(np.ascontiguousarray(value)).clone()
        file_names[name] = blob
    return SourceCheckpoint(format="caffe2", tensors=tensors, file_names=file_names, ignored=sorted(ignored),
                            nonlocal_instantiation=None)


def _is_solver_blob(blob: str) -> bool:
    """Optimiser state in a Caffe2 checkpoint (momentum buffers, the learning rate, the
    iteration counter): not weights, as PySlowFast's Caffe2 loader treats them."""
    return "momentum" in blob or blob in ("lr", "model_iter") or blob.endswith(("_lr", "_model_iter"))


# --- Caffe2 blob names -> PySlowFast names ----------------------------------------------------
def _layer_entry(suffix: str) -> str:
    """A Caffe2 layer's entry suffix (``w``, ``b``, ``bn_s``, ``bn_riv``, ...) as PySlowFast's
    (``weight``, ``bias``, ``bn.weight``, ``bn.running_var``)."""
    if suffix.startswith("bn_") and suffix[3:] in _BN_ENTRIES:
        return "bn." + _BN_ENTRIES[suffix[3:]]
    return {"w": "weight", "b": "bias"}.get(suffix, suffix)


_C2_RULES: list[tuple[re.Pattern, Any]] = [
    # nonlocal_conv4_6_theta_w -> s4.pathway0_nonlocal6.conv_theta.weight (Slow only in the zoo)
    (re.compile(r"^nonlocal_conv(\d+)_(\d+)_(theta|phi|g|out)_(w|b)$"),
     lambda m: f"s{m[1]}.pathway0_nonlocal{m[2]}.conv_{m[3]}.{_layer_entry(m[4])}"),
    (re.compile(r"^nonlocal_conv(\d+)_(\d+)_(bn_\w+)$"),
     lambda m: f"s{m[1]}.pathway0_nonlocal{m[2]}.{_layer_entry(m[3])}"),
    # the Fast->Slow laterals: t_pool1_subsample_* after the stem, else named by the Fast block they read
    (re.compile(r"^t_pool1_subsample_(\w+)$"), lambda m: _fuse_name(1, m[1])),
    (re.compile(r"^t_res(\d+)_\d+_branch2c_bn_subsample_(\w+)$"), lambda m: _fuse_name(int(m[1]), m[2])),
    # stems
    (re.compile(r"^(t_)?conv1_(w|b)$"), lambda m: f"s1.pathway{1 if m[1] else 0}_stem.conv.{_layer_entry(m[2])}"),
    (re.compile(r"^(t_)?res_conv1_(bn_\w+)$"), lambda m: f"s1.pathway{1 if m[1] else 0}_stem.{_layer_entry(m[2])}"),
    # res2_0_branch2a_bn_s -> s2.pathway0_res0.branch2.a_bn.weight; res2_0_branch1_w -> ...branch1.weight
    (re.compile(r"^(t_)?res(\d+)_(\d+)_branch2([abc])_(\w+)$"),
     lambda m: f"s{m[2]}.pathway{1 if m[1] else 0}_res{m[3]}.branch2.{m[4]}{_joined(m[5])}"),
    (re.compile(r"^(t_)?res(\d+)_(\d+)_branch1_(\w+)$"),
     lambda m: f"s{m[2]}.pathway{1 if m[1] else 0}_res{m[3]}.branch1{_joined(m[4])}"),
    (re.compile(r"^pred_(w|b)$"), lambda m: f"head.projection.{_layer_entry(m[1])}"),
]


def _joined(suffix: str) -> str:
    """``w`` -> ``.weight``; ``bn_s`` -> ``_bn.weight`` (PySlowFast's ``a_bn`` / ``branch1_bn``)."""
    entry = _layer_entry(suffix)
    return "_" + entry if entry.startswith("bn.") else "." + entry


def _fuse_name(stage: int, suffix: str) -> str:
    entry = _layer_entry(suffix)
    return f"s{stage}_fuse.{entry}" if entry.startswith("bn.") else f"s{stage}_fuse.conv_f2s.{entry}"


def caffe2_to_pyslowfast(blob: str) -> str:
    """The PySlowFast state-dict name of a Caffe2 zoo blob (PySlowFast's own c2 loader gives
    the same names); a blob no rule knows keeps its name (and is reported as unexpected)."""
    for pattern, name in _C2_RULES:
        m = pattern.match(blob)
        if m:
            return name(m)
    return blob


# --- avsf names -> source names ------------------------------------------------------------------
def _block_layout(stage: nn.Module) -> list[tuple[str, int]]:
    """(kind, index) of each module of a visual stage's ``blocks``: ("res", i) for the i-th
    bottleneck, ("nonlocal", i) for the non-local block after bottleneck i (PySlowFast's
    ``pathway0_nonlocal{i}``)."""
    out, res = [], -1
    for m in stage.blocks:
        if isinstance(m, Bottleneck3d):
            res += 1
            out.append(("res", res))
        elif isinstance(m, NonLocal3d):
            out.append(("nonlocal", res))
        else:
            raise TypeError(f"unexpected module {type(m).__name__} in a visual stage")
    return out


def _visual_source_name(key: str, *, fmt: str, layouts: dict[tuple[str, str], list[tuple[str, int]]]) -> str | None:
    """The source name of an avsf visual key (Slow, Fast, Fast->Slow; the head of a SlowFast
    model), or None when the key is not of those."""
    ptv = fmt == "pytorchvideo"
    m = re.match(r"^(slow|fast)\.stem\.(conv|bn)\.(\w+)$", key)
    if m:
        p = _PATHWAY[m[1]]
        layer = ("conv" if m[2] == "conv" else "norm") if ptv else m[2]
        return f"blocks.0.multipathway_blocks.{p}.{layer}.{m[3]}" if ptv else f"s1.pathway{p}_stem.{layer}.{m[3]}"
    m = re.match(r"^fs\.(pool1|res[2-4])\.(conv|bn)\.(\w+)$", key)
    if m:
        n = _JUNCTION_NUMBER[m[1]]
        if ptv:
            return f"blocks.{n - 1}.multipathway_fusion.{'conv_fast_to_slow' if m[2] == 'conv' else 'norm'}.{m[3]}"
        return f"s{n}_fuse.{'conv_f2s' if m[2] == 'conv' else 'bn'}.{m[3]}"
    m = re.match(r"^(slow|fast)\.(res[2-5])\.blocks\.(\d+)\.(.+)\.(\w+)$", key)
    if m:
        pathway, stage, j, layer, entry = m[1], m[2], int(m[3]), m[4], m[5]
        p, n = _PATHWAY[pathway], _STAGE_NUMBER[stage]
        kind, i = layouts[(pathway, stage)][j]
        if kind == "nonlocal":
            if ptv:  # create_slowfast has no non-local blocks (convert() says so before matching)
                return f"(pytorchvideo has no non-local block for {key})"
            return f"s{n}.pathway{p}_nonlocal{i}.{_NONLOCAL[layer]}.{entry}"
        own = _BOTTLENECK[layer][1 if ptv else 0]
        if ptv:
            return f"blocks.{n - 1}.multipathway_blocks.{p}.res_blocks.{i}.{own}.{entry}"
        return f"s{n}.pathway{p}_res{i}.{own}.{entry}"
    return None


def source_names(model: AVSlowFast, *, fmt: str) -> dict[str, str | None]:
    """For every key of `model`'s state dict, the source name it is copied from, or None when
    it is initialised as in training (everything of an AVSlowFast model but its visual
    pathways and Fast->Slow laterals)."""
    layouts = {(p, st): _block_layout(getattr(model, p)[st]) for p in ("slow", "fast")
               for st in getattr(model, p) if st != "stem"}
    visual_only = model.cfg.arch == "slowfast"
    out: dict[str, str | None] = {}
    for key in model.state_dict():
        name = _visual_source_name(key, fmt=fmt, layouts=layouts)
        if name is None and visual_only and key.startswith("head.fc."):
            entry = key.rsplit(".", 1)[1]
            name = f"blocks.6.proj.{entry}" if fmt == "pytorchvideo" else f"head.projection.{entry}"
        out[key] = name
    return out


def _head_name(fmt: str) -> str:
    return "blocks.6.proj.weight" if fmt == "pytorchvideo" else "head.projection.weight"


def _head_names(fmt: str) -> tuple[str, str]:
    base = "blocks.6.proj." if fmt == "pytorchvideo" else "head.projection."
    return base + "weight", base + "bias"


# --- matching a source to a preset ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Target:
    """What a preset's model takes from a source of one format (built on the meta device)."""

    names: dict[str, str | None]  # avsf key -> source name (None: initialised as in training)
    shapes: dict[str, tuple[int, ...]]
    visual_only: bool  # arch slowfast: the head comes from the source too
    has_nonlocal: bool


@functools.lru_cache(maxsize=64)
def preset_target(preset: str, *, overrides: tuple[str, ...], num_classes: int, fmt: str) -> Target:
    """The :class:`Target` of `preset` with `overrides` and `num_classes` classes (cached: a
    meta build of an R101 takes a fifth of a second)."""
    model = _model_for(_config(preset, overrides=overrides, num_classes=num_classes), device="meta")
    return Target(names=source_names(model, fmt=fmt),
                  shapes={k: tuple(v.shape) for k, v in model.state_dict().items()},
                  visual_only=model.cfg.arch == "slowfast",
                  has_nonlocal=any(isinstance(m, NonLocal3d) for m in model.modules()))


def _config(preset: str, *, overrides: tuple[str, ...], num_classes: int) -> RunConfig:
    cfg = get_preset(preset).with_overrides(list(overrides))
    if cfg.model.arch not in ("slowfast", "avslowfast") or cfg.model.task != "classify":
        raise UserError(f"preset {preset!r} is arch {cfg.model.arch}, task {cfg.model.task}; a SlowFast "
                        f"classifier converts into a slowfast or avslowfast classification preset")
    cfg.model.num_classes = num_classes
    return cfg


@dataclasses.dataclass
class Match:
    """How a source's tensors line up with a target's: what is copied, and what does not fit."""

    missing: list[str]  # "avsf key <- source name" the source lacks
    unexpected: list[str]  # source tensors (file names) no avsf key takes
    mismatched: list[str]  # "avsf key <- source name [source shape] vs [avsf shape]"
    unset: list[str]  # avsf keys left at their initial value for want of a stored tensor (Caffe2 BN counters)
    dropped: list[str]  # source tensors deliberately not taken (the SlowFast head, for an AVSlowFast preset)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def match_source(target: Target, source: SourceCheckpoint) -> Match:
    missing, mismatched, unset = [], [], []
    used = set()
    for key, name in target.names.items():
        if name is None:
            continue
        if name not in source.tensors:
            if source.format == "caffe2" and key.endswith(".num_batches_tracked"):
                unset.append(key)  # Caffe2 keeps no BN step counter (eval ignores it)
                continue
            hint = " (as a Caffe2 blob)" if source.format == "caffe2" else ""
            missing.append(f"{key} <- {name}{hint}")
            continue
        used.add(name)
        have, want = tuple(source.tensors[name].shape), target.shapes[key]
        if have != want:
            mismatched.append(f"{key} <- {source.file_names[name]} {list(have)} vs {list(want)}")
    # an AVSlowFast head is wider than SlowFast's: the source's is set aside, not an error
    dropped = [] if target.visual_only else [n for n in _head_names(source.format) if n in source.tensors]
    unexpected = sorted(source.file_names[n] for n in source.tensors if n not in used and n not in dropped)
    return Match(missing=missing, unexpected=unexpected, mismatched=mismatched, unset=unset,
                 dropped=[source.file_names[n] for n in dropped])


def _show(items: list[str]) -> str:
    return ", ".join(items[:SHOW]) + (f" ... ({len(items)} in all)" if len(items) > SHOW else f" ({len(items)})")


def _model_for(cfg: RunConfig, *, device: str | torch.device = "cpu") -> AVSlowFast:
    with torch.device(device):
        model = build_model(cfg.model)
    assert isinstance(model, AVSlowFast)  # _config admits slowfast and avslowfast only
    return model


def fitting_presets(source: SourceCheckpoint, *, num_classes: int) -> list[str]:
    """Presets (arch slowfast or avslowfast, classification) whose visual part the source
    fills exactly, without overrides."""
    out = []
    for name in list_presets():
        cfg = get_preset(name)
        if cfg.model.arch not in ("slowfast", "avslowfast") or cfg.model.task != "classify":
            continue
        if match_source(preset_target(name, overrides=(), num_classes=num_classes, fmt=source.format), source).ok:
            out.append(name)
    return out


def _nonlocal_problem(source: SourceCheckpoint) -> str | None:
    """Why the source's non-local blocks would not compute what avsf's do, or None."""
    if source.nonlocal_instantiation == "softmax":
        return None
    # same parameters, different function: a strict load would succeed and compute something else
    why = (f"its config says NONLOCAL.INSTANTIATION={source.nonlocal_instantiation!r}"
           if source.nonlocal_instantiation else "the file does not record NONLOCAL.INSTANTIATION")
    return (f"avsf's non-local block normalises the affinity with a softmax (PySlowFast's 'softmax' "
            f"instantiation) and {why}: PySlowFast's SlowFast NLN configs use 'dot_product' (affinity / positions), "
            f"which has the same parameters and computes something else. Convert only checkpoints trained with "
            f"INSTANTIATION softmax")


# --- the conversion ----------------------------------------------------------------------------
@dataclasses.dataclass
class Conversion:
    state: dict[str, Any]  # the checkpoint to write (see the module docstring)
    record: dict[str, Any]  # state[CONVERTED_KEY]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert(path: str | Path, *, fmt: str, preset: str, overrides: list[str] | None = None,
            seed: int = 0) -> Conversion:
    """Convert the zoo checkpoint at `path` (format `fmt`) into the model of `preset` (with
    `overrides`, ``section.key=value``). Tensors not taken from the source are initialised as
    in training under ``torch.manual_seed(seed)``. UserError naming the keys when the source
    and the preset do not match (wrong preset, missing or unexpected keys, shape differences)."""
    path = Path(path)
    overrides = tuple(overrides or ())
    source = read_source(path, fmt=fmt)
    head = _head_name(fmt)
    if head not in source.tensors:
        raise UserError(f"{path}: no classifier ({'pred_w' if fmt == 'caffe2' else head}) among its "
                        f"{len(source.tensors)} tensors; is it a {fmt} SlowFast checkpoint?")
    num_classes = int(source.tensors[head].shape[0])
    cfg = _config(preset, overrides=overrides, num_classes=num_classes)
    if fmt == "pytorchvideo" and cfg.model.nonlocal_res4:
        raise UserError(f"preset {preset!r} has non-local blocks in res4 and pytorchvideo's create_slowfast has "
                        f"none; add --set model.nonlocal_res4=false (and fine-tune with the same override)")
    target = preset_target(preset, overrides=overrides, num_classes=num_classes, fmt=fmt)
    match = match_source(target, source)
    if not match.ok:
        parts = []
        if match.mismatched:
            parts.append("shape differences at " + _show(match.mismatched))
        if match.missing:
            parts.append("missing from the file: " + _show(match.missing))
        if match.unexpected:
            parts.append("in the file but not in the preset: " + _show(match.unexpected))
        fits = fitting_presets(source, num_classes=num_classes)
        hint = (f"presets this file fits: {', '.join(fits)}" if fits else
                "no preset fits it as it is; --set model.* overrides (e.g. model.fusion_kernel) may")
        raise UserError(f"{path.name} ({fmt}) does not match preset {preset!r}"
                        f"{''.join(' --set ' + o for o in overrides)}: {'; '.join(parts)}. {hint}")
    if target.has_nonlocal and (problem := _nonlocal_problem(source)):
        raise UserError(f"{path.name}: {problem}")
    torch.manual_seed(seed)
    model = _model_for(cfg)
    state_dict = model.state_dict()
    keys: dict[str, str | None] = {}
    for key, name in target.names.items():
        taken = name is not None and name in source.tensors
        if taken:
            state_dict[key] = source.tensors[name].to(dtype=state_dict[key].dtype).clone()
        keys[key] = source.file_names[name] if taken else None
    model.load_state_dict(state_dict, strict=True)  # the whole state, key for key
    record = {"file": path.name, "format": fmt, "sha256": sha256_file(path), "preset": preset,
              "overrides": list(overrides), "seed": seed, "num_classes": num_classes,
              "from_source": sum(v is not None for v in keys.values()),
              "initialised": sum(v is None for v in keys.values()),
              "ignored_in_file": source.ignored, "set_aside": match.dropped, "keys": keys}
    state = {"model": {k: v.contiguous() for k, v in model.state_dict().items()}, "optimizer": {}, "step": 0,
             "epoch": 0, "batch_in_epoch": 0, "rng": {}, "config_hash": None,
             "model_config": dataclasses.asdict(cfg.model), CONVERTED_KEY: record}
    return Conversion(state=state, record=record)


def write_checkpoint(conversion: Conversion, out: str | Path) -> Path:
    """Write the converted checkpoint atomically (a torch file; loads with weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(conversion.state, buffer)
    return atomic_write(out, buffer.getbuffer())


def group_of(key: str) -> str:
    """The module group a key is summarised under: ``slow.res2``, ``fs.pool1``, ``audio.stem``,
    ``av.res3``, ``avs.res4``, ``head``."""
    parts = key.split(".")
    return parts[0] if parts[0] in ("head", "rot_head") else ".".join(parts[:2])


def summary_lines(record: dict[str, Any]) -> list[str]:
    """One line per module group: how many tensors came from the source (and from which of
    its names) and how many were initialised."""
    groups: dict[str, list[tuple[str, str | None]]] = {}
    for key, name in record["keys"].items():
        groups.setdefault(group_of(key), []).append((key, name))
    width = max(map(len, groups))
    lines = []
    for group, items in groups.items():
        taken = [n for _, n in items if n is not None]
        left = len(items) - len(taken)
        parts = []
        if taken:
            parts.append(f"{len(taken)} from {_pattern(taken)}")
        if left:
            parts.append(f"{left} initialised" + (f" (seed {record['seed']})" if not taken else ""))
        lines.append(f"{group:<{width}}  {', '.join(parts)}")
    return lines


def _pattern(names: list[str]) -> str:
    """A compact description of source names: their common prefix followed by ``*``."""
    if len(names) == 1:
        return names[0]
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    return (prefix or "") + "*"
