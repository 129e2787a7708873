"""The AVSlowFast family: per-stage shapes of every preset, tiny presets train, options build,
late fusion, bad input."""

import dataclasses

import pytest
import torch

from avsf.cli import main
from avsf.config import DEPTHS, ConfigError
from avsf.errors import UserError
from avsf.models import AVSlowFast, LateFusion, build_model, describe_stages, example_inputs
from avsf.models.blocks import PointwiseConv2d, PointwiseConv3d, TimeFreqBlock, channels_last, is_channels_last
from avsf.presets import get_preset, list_presets


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = ("slowfast_tiny", "avslowfast_tiny", "audio_only_tiny")


def _tiny(name="avslowfast_tiny", **changes):
    cfg = dataclasses.replace(get_preset(name).model, num_classes=5, **changes)
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def _expected_rows(cfg, crop):
    """Stage output shapes from the paper's rules, written independently of the model code."""
    w, t, a = cfg.width, cfg.slow_frames, cfg.alpha
    fw, aw = w // cfg.beta_inv, int(round(w * cfg.audio_beta))
    rows = {}
    visual = cfg.arch in ("slowfast", "avslowfast", "late_fusion")
    audio = cfg.arch in ("avslowfast", "audio_only", "late_fusion")
    size, at, af = -(-(-(-crop // 2)) // 2), cfg.audio_frames, cfg.audio_mel_bins  # conv /2, max pool /2
    for i, st in enumerate(("pool1", "res2", "res3", "res4", "res5")):
        mult = 1 if st == "pool1" else 2 ** (i + 1)
        if st in ("res3", "res4", "res5"):
            detector_res5 = st == "res5" and cfg.task == "detect"  # appendix A.7: res5 stride 1
            size, at, af = size if detector_res5 else -(-size // 2), -(-at // 2), -(-af // 2)
        if visual:
            rows[(st, "slow")] = (w * mult, t, size, size)
            rows[(st, "fast")] = (fw * mult, t * a, size, size)
        if audio:
            rows[(st, "audio")] = (aw * mult, at, af)
    return rows


@pytest.mark.parametrize("name", list_presets())
def test_stage_shapes_of_every_preset(name, capsys):
    cfg = get_preset(name)
    crop = cfg.data.train_crop
    rows = describe_stages(cfg.model, crop)
    with capsys.disabled():
        print(f"\n{name} at {crop}x{crop}")
        for stage, pathway, shape in rows:
            print(f"  {stage:<6} {pathway:<10} {' x '.join(map(str, shape))}")
    got = {(s, p): shape for s, p, shape in rows if s not in ("input", "head")}
    assert got == _expected_rows(cfg.model, crop)
    heads = {p: shape for s, p, shape in rows if s == "head"}
    if cfg.model.head == "epic":
        assert heads == {"verb_logits": (cfg.model.num_verbs,), "noun_logits": (cfg.model.num_nouns,)}
    elif cfg.model.task == "pretrain":  # self-supervised presets: the rotation head, no classifier
        assert heads == {"rot_logits": (4,)}
    else:
        assert heads == {"logits": (cfg.model.num_classes or 400,)}


def test_avslowfast_4x16_matches_the_reference_table():
    rows = {(s, p): shape for s, p, shape in describe_stages(get_preset("avslowfast_r50_4x16").model, 224)}
    # REFERENCE.md: audio 128x80 -> res3 64x40 -> res4 32x20 -> res5 16x10, widths 32..1024
    assert rows[("pool1", "audio")] == (32, 128, 80)
    assert rows[("res3", "audio")] == (256, 64, 40)
    assert rows[("res5", "audio")] == (1024, 16, 10)
    assert rows[("res5", "slow")] == (2048, 4, 7, 7) and rows[("res5", "fast")] == (256, 32, 7, 7)


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_forward_backward_gives_every_parameter_a_gradient(name):
    cfg, model = _tiny(name)
    model.train()
    batch = example_inputs(cfg, crop=get_preset(name).data.train_crop, batch=8, with_negatives=True)
    out = model(batch)
    assert out["logits"].shape == (8, 5)
    loss = out["logits"].logsumexp(1).mean() + out.get("avs_loss", 0.0)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    if name == "avslowfast_tiny":
        assert set(out) >= {"avs_loss", "avs_loss/res3", "avs_loss/res4", "avs_loss/res5"}


@pytest.mark.parametrize("changes", [
    {"audio_tf_block": "sum"}, {"audio_tf_block": "none"}, {"av_lateral": "a_f_s"},
    {"av_lateral": "av_nonlocal"}, {"audio_beta": 0.125, "width": 32}, {"audio_beta": 1.0},
    {"nonlocal_res4": True, "stage_depths": (1, 1, 2, 1)}, {"head": "sigmoid"},
    {"av_fusion_stages": ("pool1", "res2", "res3", "res4"), "pool5_fusion": False},
    {"fs_fusion_stages": (), "av_fusion_stages": ("res4",)},
])
def test_options_build_and_train(changes):
    cfg, model = _tiny(**changes)
    model.train()
    batch = example_inputs(cfg, crop=48, batch=2, with_negatives=True)
    out = model(batch, drop_audio=False)
    (out["logits"].sum() + out["avs_loss"]).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_epic_head_gives_verb_and_noun_logits():
    cfg, model = _tiny(head="epic", num_verbs=7, num_nouns=11)
    out = model.eval()(example_inputs(cfg, crop=48, batch=2))
    assert out["verb_logits"].shape == (2, 7) and out["noun_logits"].shape == (2, 11)


def test_time_frequency_block_variants():
    concat = TimeFreqBlock(dim_in=32, dim_inner=16, dim_out=64, stride=2, variant="concat", zero_init_final_bn=True)
    # concat: both branches read the input; the 1x1 reads their concatenation
    assert concat.time[0].weight.shape == (16, 32, 3, 1) and concat.freq[0].weight.shape == (16, 32, 1, 3)
    assert concat.out[0].weight.shape == (64, 32, 1, 1) and concat.reduce is None
    summed = TimeFreqBlock(dim_in=32, dim_inner=16, dim_out=64, stride=2, variant="sum", zero_init_final_bn=True)
    assert summed.time[0].weight.shape == (16, 16, 3, 1) and summed.out[0].weight.shape == (64, 16, 1, 1)
    y = concat(torch.randn(2, 32, 20, 10))
    assert y.shape == (2, 64, 10, 5)


def test_audio_stem_has_no_pooling_and_sums_two_factorised_convs():
    cfg, model = _tiny()
    stem = model.audio["stem"]
    assert stem.time.weight.shape[2:] == (9, 1) and stem.freq.weight.shape[2:] == (1, 9)
    x = torch.randn(2, 1, cfg.audio_frames, cfg.audio_mel_bins)
    assert stem(x).shape[2:] == x.shape[2:]


def test_depths_and_width_follow_the_config():
    for depth, blocks in DEPTHS.items():
        with torch.device("meta"):
            model = AVSlowFast(dataclasses.replace(get_preset("avslowfast_r50_4x16").model, depth=depth))
        assert [len(model.audio[s].blocks) for s in ("res2", "res3", "res4", "res5")] == list(blocks)


def test_late_fusion_averages_the_two_models_probabilities():
    assert get_preset("late_fusion_r50_4x16").model.arch == "late_fusion"
    cfg = dataclasses.replace(get_preset("avslowfast_tiny").model, num_classes=5, arch="late_fusion")
    torch.manual_seed(0)
    fused = build_model(cfg).eval()
    assert isinstance(fused, LateFusion)
    assert fused.visual_model.cfg.arch == "slowfast" and fused.audio_model.cfg.arch == "audio_only"
    batch = example_inputs(cfg, crop=48, batch=3)
    out = fused(batch)
    expected = (fused.visual_model(batch)["logits"].softmax(1) + fused.audio_model(batch)["logits"].softmax(1)) / 2
    torch.testing.assert_close(out["probs"], expected)
    torch.testing.assert_close(out["logits"].softmax(1), expected)
    assert torch.allclose(out["probs"].sum(1), torch.ones(3))


def test_late_fusion_multilabel_averages_sigmoids():
    torch.manual_seed(0)
    v = build_model(dataclasses.replace(get_preset("slowfast_tiny").model, num_classes=4, head="sigmoid")).eval()
    a = build_model(dataclasses.replace(get_preset("audio_only_tiny").model, num_classes=4, head="sigmoid")).eval()
    fused = LateFusion(v, a, multilabel=True)
    batch = example_inputs(dataclasses.replace(v.cfg, arch="late_fusion"), crop=48, batch=2)
    expected = (v(batch)["logits"].sigmoid() + a(batch)["logits"].sigmoid()) / 2
    torch.testing.assert_close(fused(batch)["logits"].sigmoid(), expected)


# --- bad input -------------------------------------------------------------------------------
def test_wrong_shaped_input_names_the_expected_shapes():
    cfg, model = _tiny()
    batch = example_inputs(cfg, crop=48, batch=2)
    batch["fast"] = batch["fast"][:, :, :8]
    with pytest.raises(UserError) as e:
        model(batch)
    msg = str(e.value)
    assert "'fast'" in msg and "[2, 3, 8, 48, 48]" in msg and f"[N, 3, {cfg.slow_frames * cfg.alpha}, H, W]" in msg
    batch = example_inputs(cfg, crop=48, batch=2)
    batch["audio"] = batch["audio"][:1]
    with pytest.raises(UserError, match="same N"):
        model(batch)


def test_missing_pathway_names_what_the_model_needs():
    cfg, model = _tiny()
    batch = example_inputs(cfg, crop=48, batch=2)
    del batch["audio"]
    with pytest.raises(UserError) as e:
        model(batch)
    assert "lacks 'audio'" in str(e.value) and f"[N, 1, {cfg.audio_frames}, {cfg.audio_mel_bins}]" in str(e.value)


def test_bad_model_configs_say_what_to_change():
    base = get_preset("avslowfast_tiny").model
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(base)  # smoke presets leave num_classes=0 for the trainer
    with pytest.raises(ConfigError, match="multiple of"):
        build_model(dataclasses.replace(base, num_classes=3, audio_frames=60))
    with pytest.raises(ConfigError, match="never uses its Audio pathway"):
        build_model(dataclasses.replace(base, num_classes=3, av_fusion_stages=(), pool5_fusion=False, avs_stages=()))


def test_unknown_preset_is_a_one_line_error(capsys):
    assert main(["flops", "--preset", "avslowfast_r9000"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'avslowfast_r9000'" in err and "slowfast_r50_4x16" in err


def test_bench_reports_speed_memory_and_the_stage_split():
    from avsf.models.bench import _profile_stages, bench_model, format_report

    # profile=False: torch.profiler's first start alone takes seconds; the stage split is checked below
    result = bench_model(preset="audio_only_tiny", batch=2, crop=None, iters=2, device="cpu", bf16=False,
                         profile=False)
    assert result["clips_per_s"] > 0 and result["peak_mem_mb"] >= 0 and result["cpu_s_per_step"] > 0
    assert result["input_shapes"] == {"audio": [2, 1, 64, 40]}
    assert "clips/s" in format_report(result)
    cfg, model = _tiny()
    stages = _profile_stages(model.train(), example_inputs(cfg, crop=48, batch=2), "cpu", False, 1.0)
    names = {r["stage"] for r in stages}
    assert {"slow.res2", "fast.res4", "audio.res5", "fs.pool1", "av.res3"} <= names
    assert all(r["ms"] > 0 for r in stages)
    with pytest.raises(UserError, match="at least 1"):
        bench_model(preset="audio_only_tiny", batch=0, crop=None, iters=1, device="cpu", bf16=False, profile=False)


def test_bench_compare_alternates_processes_pairs_rounds_and_names_the_missing_extra(monkeypatch, capsys):
    import sys

    from avsf.models import bench

    # two real contender processes (tiny models, batch 2): one step at a time, alternated
    spec = dict(kind="ours", batch=2, crop=32, avs=True)
    timings = bench._alternate({"a": dict(spec, preset="slowfast_tiny"), "b": dict(spec, preset="avslowfast_tiny")},
                               rounds=3, threads=1)
    starts = sorted((t, name) for name in "ab" for t in timings[name]["started"])
    assert [name for _, name in starts] == ["a", "b"] * 3
    for name in "ab":
        assert len(timings[name]["wall_s"]) == 3 and timings[name]["clips_per_s"] > 0
    assert timings["b"]["input_shapes"]["audio_neg"] == [2, 1, 64, 40] and "audio" not in timings["a"]["input_shapes"]
    with pytest.raises(UserError, match="speed comparison, bad: .*no-such-preset"):
        bench._alternate({"bad": dict(spec, preset="no-such-preset")}, rounds=1, threads=1)
    ratio = bench._paired_ratio({"wall_s": [2.0, 9.0, 4.0]}, {"wall_s": [1.0, 3.0, 4.0]})
    assert ratio == 2.0  # the median of the per-round ratios 2, 3, 1
    monkeypatch.setitem(sys.modules, "pytorchvideo", None)  # as if the optional extra were not installed
    with pytest.raises(UserError, match=r"\.\[bench\].*--no-pytorchvideo"):
        bench._pytorchvideo_step(crop=128, batch={}, labels=torch.zeros(1), num_classes=4)
    assert main(["bench", "model"]) == 2
    assert "--preset NAME" in capsys.readouterr().err
    assert main(["bench", "model", "--compare", "--preset", "avslowfast_tiny"]) == 2
    assert "drop --preset" in capsys.readouterr().err


@pytest.mark.parametrize("conv, shape", [
    (PointwiseConv2d(8, 16, stride=2), (3, 8, 33, 20)),  # few channels: subsampled, then unit stride
    (PointwiseConv3d(4, 8, stride=(1, 2, 2)), (2, 4, 3, 9, 10)),
    (PointwiseConv2d(16, 8, stride=2), (3, 16, 9, 7)),  # a multiple of oneDNN's block: its strided kernel
])
def test_strided_pointwise_conv_equals_a_plain_strided_conv_and_keeps_the_layout(conv, shape):
    """The oneDNN workaround (avsf.models.blocks.pointwise_conv) changes the kernel, not the
    sums: output and both gradients equal a strided conv's in the default layout with oneDNN
    off, odd sizes (ceil division) included, and the input's gradient stays channels-last."""
    torch.manual_seed(0)
    x0 = torch.randn(shape)
    x = channels_last(x0).requires_grad_()
    y = conv(x)
    grad = torch.randn(y.shape)
    y.backward(channels_last(grad))
    ref_x, ref_w = x0.clone().requires_grad_(), conv.weight.detach().contiguous().requires_grad_()
    fn = torch.nn.functional.conv3d if len(shape) == 5 else torch.nn.functional.conv2d
    with torch.backends.mkldnn.flags(enabled=False):
        ref = fn(ref_x, ref_w, stride=conv.stride)
        ref.backward(grad)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(x.grad, ref_x.grad)
    torch.testing.assert_close(conv.weight.grad, ref_w.grad, rtol=1e-4, atol=1e-4)
    assert is_channels_last(y) and is_channels_last(x.grad)
    assert [n for n, _ in conv.named_parameters()] == ["weight"]  # checkpoints of nn.Conv shortcuts load


@pytest.mark.parametrize("variant", ["concat", "sum"])
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_time_freq_branches_equal_the_two_branches(variant, stride):
    """The CPU path that runs a time-frequency block's 3x1 and 1x3 branches as one 3x3 conv and
    one BN (narrow branches, avsf.models.blocks.TimeFreqBlock._fuse_branches): output, input
    gradient, every parameter's gradient and both BNs' running statistics (momentum and the
    cumulative average precise BN uses) equal the two-branch path's; eval and no-grad passes (FLOP
    counts) take the two branches."""
    import copy

    torch.manual_seed(0)
    fused = TimeFreqBlock(dim_in=12, dim_inner=8, dim_out=32, stride=stride, variant=variant, zero_init_final_bn=False)
    for bn in (fused.time[1], fused.freq[1]):  # distinct BN parameters and statistics per branch
        bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    plain = copy.deepcopy(fused)
    plain._fuse_branches = lambda y: False
    x0 = channels_last(torch.randn(4, 12, 17, 10))
    for momentum in (0.1, None):
        for m in (fused, plain):
            m.time[1].momentum = m.freq[1].momentum = momentum
        for training in (True, False):
            outs = []
            for m in (fused, plain):
                m.train(training).zero_grad()
                x = x0.clone().requires_grad_()
                y = m(x)
                y.backward(torch.ones_like(y))
                outs.append((y, x.grad, {n: p.grad for n, p in m.named_parameters()}, copy.deepcopy(m.state_dict())))
            assert fused._fuse_branches(x0) == training and not plain._fuse_branches(x0)
            (y1, g1, p1, s1), (y2, g2, p2, s2) = outs
            torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-4)
            for name in p1:  # sums over the batch: fp32 rounding scales with the gradient's size
                scale = float(p2[name].abs().max())  # (~500 here; AVX2 and AVX-512 kernels round apart)
                torch.testing.assert_close(p1[name], p2[name], rtol=1e-4, atol=1e-4 + 1e-5 * scale, msg=name)
            for name in s1:
                torch.testing.assert_close(s1[name], s2[name], rtol=1e-5, atol=1e-6, msg=name)
    assert int(fused.time[1].num_batches_tracked) == 2
