"""CUT / FastCUT: the PatchNCE loss by hand, shared locations, the heads' size, the modes' terms, flip
equivariance, the anti-aliased layers by hand, a tiny run that trains, exports, samples and evaluates,
a bf16 resume equal to the uninterrupted run, and the errors for bad keys."""
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from safetensors.torch import load_file

from gen import config, pipelines
from gen.data.build import eval_data
from gen.losses.patchnce import PatchNCEHeads, patchnce_loss, sample_locations
from gen.models import create_model
from gen.models.antialias import BlurDownsample, BlurUpsample
from trainers import CUTTrainer, checkpoint
from gen.evaluate import SavedOutputs
from test_cyclegan import cyclegan_overrides, judged_b_by_hand, write_unpaired
from conftest import tiny_overrides, write_aligned


def cut_overrides(run_dir, root, **extra):
    """CycleGAN's tiny unpaired setting (5-level U-Net, ngf 8, 32x32 crops) as a CUT run."""
    return cyclegan_overrides(run_dir, root, **{"method": "cut", "cut.num_patches": 16, **extra})


def make(tmp_path, **extra):
    root = write_unpaired(tmp_path / "data")
    t = CUTTrainer(config.load(None, cut_overrides(tmp_path / "run", root, **extra)))
    t.build_data()
    t.build()
    t.prepare()
    return t


def test_patchnce_loss_by_hand():
    # one image, two locations, temperature 0.5: row s holds q_s . k_s' / tau, the positive at s' = s
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    k = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]], requires_grad=True)
    loss = patchnce_loss(q, k, temperature=0.5)
    want = [math.log(math.exp(2.0) + math.exp(1.2)) - 2.0, math.log(math.exp(0.0) + math.exp(1.6)) - 1.6]
    assert torch.allclose(loss, torch.tensor([want]), atol=1e-6)
    loss.sum().backward()
    assert q.grad is not None and k.grad is None  # keys detached: G learns through the queries


def test_negatives_come_from_the_same_image_only():
    q = F.normalize(torch.randn(2, 3, 4), dim=-1)
    k = F.normalize(torch.randn(2, 3, 4), dim=-1)
    both = patchnce_loss(q, k)
    assert torch.allclose(both[0], patchnce_loss(q[:1], k[:1])[0])
    assert torch.allclose(both[1], patchnce_loss(q[1:], k[1:])[0])


def test_queries_use_the_keys_locations():
    torch.manual_seed(0)
    heads = PatchNCEHeads([3, 5], width=8)
    feats = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    keys, where = heads(feats, num_patches=6)
    assert [w.shape[0] for w in where] == [6, 4]  # at most H * W locations, all distinct
    assert all(len(set(w.tolist())) == len(w) for w in where)
    again, same = heads(feats, 6, where)
    assert all(torch.equal(a, b) for a, b in zip(keys, again)) and same == where
    s = int(where[0][2])  # projection of location s of image 1 at layer 0, by hand
    by_hand = heads.mlps[0](feats[0][1, :, s // 4, s % 4])
    assert torch.allclose(keys[0][1, 2], by_hand / by_hand.norm(), atol=1e-6)
    assert torch.allclose(keys[0].norm(dim=-1), torch.ones(2, 6), atol=1e-6)
    assert sample_locations(torch.zeros(1, 1, 3, 3), 256).sort().values.tolist() == list(range(9))


def test_head_parameters_for_the_reference_generator():
    g = create_model("resnet_9blocks_antialias")
    channels = g.feature_channels(g.default_feature_layers)
    assert channels == [3, 128, 256, 256, 256]  # padded input, the two down convs, residual blocks 1 and 5
    heads = PatchNCEHeads(channels, 256)
    # per head: Linear(C, 256) + Linear(256, 256)
    want = (3 + 128 + 3 * 256) * 256 + 5 * (256 + 256 * 256 + 256)
    assert sum(p.numel() for p in heads.parameters()) == want == 560_384
    assert sum(p.numel() for p in g.parameters()) == 11_378_179


def test_feature_taps_are_the_layer_outputs():
    g = create_model("resnet_9blocks_antialias", ngf=4).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    feats = g(x, feature_layers=[0, 4, 8, 12])
    assert torch.equal(feats[0], F.pad(x, (3, 3, 3, 3), mode="reflect"))
    assert torch.equal(feats[3], g.body[:13](x))
    u = create_model("unet", num_downs=5, ngf=4)
    taps = u.encode_features(torch.rand(1, 3, 32, 32), [0, 1, 5])
    assert [t.shape[1:] for t in taps] == [(3, 32, 32), (4, 16, 16), (32, 1, 1)]
    assert torch.equal(g(x), g.body(x))  # the translation is unchanged


def test_blur_layers_by_hand():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    taps = torch.tensor([1.0, 2.0, 1.0])
    blur = (torch.outer(taps, taps) / 16).view(1, 1, 3, 3)
    want = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), blur, stride=2)
    assert torch.allclose(BlurDownsample(1)(x), want)
    # upsampling a constant keeps it; of a ramp along W, linear interpolation inside (taps 1,3,3,1 / 8)
    assert torch.allclose(BlurUpsample(2)(torch.full((1, 2, 3, 3), 5.0)), torch.full((1, 2, 6, 6), 5.0))
    row = BlurUpsample(1)(torch.tensor([0.0, 8.0, 16.0]).expand(1, 1, 3, 3))[0, 0, 0]
    assert torch.allclose(row, torch.tensor([0.0, 2.0, 6.0, 10.0, 14.0, 16.0]))


def test_modes_set_the_identity_term_and_flip(tmp_path):
    cut = make(tmp_path / "cut")
    assert (cut.lambda_nce, cut.nce_idt, cut.flip) == (1.0, True, False)
    fast = make(tmp_path / "fast", **{"cut.mode": "fastcut"})
    assert (fast.lambda_nce, fast.nce_idt, fast.flip) == (10.0, False, True)
    mixed = make(tmp_path / "mixed", **{"cut.mode": "fastcut", "cut.nce_idt": "true", "cut.lambda_nce": 2.0})
    assert (mixed.lambda_nce, mixed.nce_idt, mixed.flip) == (2.0, True, True)
    batch = {"A": torch.rand(2, 3, 32, 32) * 2 - 1, "B": torch.rand(2, 3, 32, 32) * 2 - 1}
    assert {"NCE", "NCE_Y", "G_GAN", "D"} <= set(cut.train_step(batch))
    assert "NCE_Y" not in fast.train_step(batch) and "NCE" in fast.train_step(batch)


def test_flip_equivariance_compares_flipped_back_features(tmp_path):
    """With the input pixels as the only tap, G(flip(x)) flipped back is compared location by location:
    a translation that is exactly flip(y) then scores as y."""
    t = make(tmp_path, **{"cut.nce_layers": "0"})
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    scores = []
    for translated, flipped in ((y.flip(-1), True), (y, False), (y.flip(-1), False)):
        torch.manual_seed(3)
        scores.append(t.nce(x, translated, flipped))
    assert torch.equal(scores[0], scores[1]) and not torch.equal(scores[0], scores[2])
    perfect = t.nce(x, x.flip(-1), True)  # the identity is compared with itself at the right places
    assert perfect < scores[1]


def test_flip_equivariance_at_any_size_pads_the_flipped_side(tmp_path):
    """data.preprocess=none, a 30 px image on a 32-multiple U-Net: the taps of flip(y) flipped back
    put the padding where the taps of y have it, so the flipped step scores as the unflipped one."""
    t = make(tmp_path, **{"cut.nce_layers": "0", "data.preprocess": "none", "train.batch_size": 1})
    x, y = torch.rand(1, 3, 30, 30) * 2 - 1, torch.rand(1, 3, 30, 30) * 2 - 1
    g = t.models["generator"]
    plain = t.forward_features(g, y)[0]
    assert plain.shape[-1] == 32 and torch.equal(t.forward_features(g, y.flip(-1), True)[0].flip(-1), plain)
    torch.manual_seed(3)
    flipped = t.nce(x, y.flip(-1), True)
    torch.manual_seed(3)
    assert torch.equal(flipped, t.nce(x, y, False))


def test_unequal_channels_need_a_gan_only_run_whose_identity_check_is_unavailable(tmp_path):
    """Gray A -> colour B: PatchNCE would feed the colour translation to G's gray encoder, so CUT and
    FastCUT are refused naming the keys; a GAN-only run trains, validates and evaluates, with the
    identity check of B images (which G cannot read) reported unavailable with the reason."""
    from gen.evaluate import evaluate
    root = write_unpaired(tmp_path / "data")
    for mode in ("cut", "fastcut"):
        with pytest.raises(ValueError, match="data.channels_a=1 and data.channels_b=3: PatchNCE"):
            config.load(None, cut_overrides(tmp_path / "r", root, **{"cut.mode": mode, "data.channels_a": 1}))
    cfg = config.load(None, cut_overrides(tmp_path / "run", root, **{
        "cut.mode": "fastcut", "cut.lambda_nce": 0, "data.channels_a": 1, "train.max_steps": 2,
        "train.validate_every": 2}))
    CUTTrainer(cfg).fit()
    result, _ = evaluate(tmp_path / "run", eval_data(cfg, "test"), grid_rows=1)
    assert result["identity_PSNR_B"] == "unavailable: B images have 3 channel(s), the generator reads 1"
    assert result["images_A"] == 2 and result["images_B"] == 2


def test_cut_starts_from_the_references_xavier_init(tmp_path):
    """CUT's code initialises G, D and the heads with xavier_normal (gain 0.02); model.init_type=normal
    gives pix2pix's N(0, 0.02)."""
    for kind, expected in ((None, None), ("normal", 0.02)):
        extra = {} if kind is None else {"model.init_type": kind}
        t = make(tmp_path / str(kind), **extra)
        head = t.models["nce_heads"].heads[0][0] if hasattr(t.models["nce_heads"], "heads") else None
        linear = head if isinstance(head, nn.Linear) else next(
            m for m in t.models["nce_heads"].modules() if isinstance(m, nn.Linear))
        fan_out, fan_in = linear.weight.shape
        std = expected if expected else 0.02 * math.sqrt(2 / (fan_in + fan_out))
        assert linear.weight.std().item() == pytest.approx(std, rel=0.15), kind


def test_tiny_run_trains_exports_samples_and_evaluates(tmp_path):
    from gen.evaluate import evaluate
    root = write_unpaired(tmp_path / "data")
    extra = {"train.ema_decay": 0.9, "train.diffaugment": "color,translation"}
    cfg = config.load(None, cut_overrides(tmp_path / "run", root, **extra))
    trainer = CUTTrainer(cfg)
    trainer.fit()
    pipe = pipelines.load(tmp_path / "run")
    assert pipe.kind == "unpaired_translation" and pipe.method == "cut" and pipe.direction == "AtoB"
    x = torch.rand(1, 3, 37, 29) * 2 - 1
    assert pipe(x).shape == (1, 3, 37, 29)
    # the export holds the EMA weights, as the trainer's own pipeline
    assert torch.equal(pipe(x), trainer.pipeline()(x))
    with pytest.raises(ValueError, match="direction"):
        pipelines.load(tmp_path / "run", direction="BtoA")
    result, grid = evaluate(tmp_path / "run", eval_data(cfg, "test"), grid_rows=2,
                            saved=SavedOutputs(tmp_path / "out"))
    assert result["images_A"] == 2 and result["images_B"] == 2 and 0 < result["identity_PSNR_B"] < 100
    assert result["classifier_acc_real_A"] == 1.0 and result["classifier_acc_real_B"] == 1.0
    assert result["translated_A_judged_B"] == judged_b_by_hand(tmp_path / "run", tmp_path / "out")
    assert "FID_to_B" in result
    assert (tmp_path / "run" / "samples" / "grid_00000004.png").is_file()
    assert (tmp_path / "run" / "export" / "discriminator" / "config.json").is_file()


def final_models(run_dir):
    ckpt = checkpoint.checkpoint_dirs(run_dir / "checkpoints")[0]
    files = (ckpt / "models").glob("*.safetensors")
    return {f"{p.stem}.{k}": v for p in files for k, v in load_file(str(p)).items()}


def test_resume_equals_the_uninterrupted_run_in_bf16(tmp_path, capsys):
    """FastCUT (flip draws) with the EMA in bf16: resuming from step 2 ends where the 4-step run ends."""
    root = write_unpaired(tmp_path / "data")
    extra = {"cut.mode": "fastcut", "train.mixed_precision": "bf16", "train.ema_decay": 0.9,
             "train.validate_every": 100}
    CUTTrainer(config.load(None, cut_overrides(tmp_path / "ref", root, **extra))).fit()
    shutil.copytree(tmp_path / "ref", tmp_path / "run")
    for stale in ("checkpoints/step_00000004", "export"):
        shutil.rmtree(tmp_path / "run" / stale)
    resumed = CUTTrainer(config.load(None, cut_overrides(tmp_path / "run", root, **extra)))
    resumed.fit()
    assert "resumed from" in capsys.readouterr().out and resumed.accelerator.mixed_precision == "bf16"
    ref, got = final_models(tmp_path / "ref"), final_models(tmp_path / "run")
    assert set(ref) == set(got) and any(k.startswith("nce_heads.") for k in ref)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(pipelines.load(tmp_path / "ref")(x), pipelines.load(tmp_path / "run")(x))  # EMA too


@pytest.mark.parametrize("extra, match", [
    ({"cut.nce_layers": "0,4,99"}, r"cut\.nce_layers.*0 \(the input\) \.\. 5"),
    ({"cut.nce_layers": "4,0"}, r"cut\.nce_layers"),
    ({"cut.nce_layers": "a"}, r"cut\.nce_layers"),
    ({"cut.mode": "CUTT"}, r"cut\.mode"),
    ({"cut.lambda_nce": -1}, r"cut\.lambda_nce"),
    ({"cut.num_patches": 0}, r"cut\.num_patches"),
    ({"cut.lambda_nce": 0, "cut.lambda_gan": 0}, r"learn nothing"),
    ({"data.channels_a": 1}, r"cut\.nce_idt"),
    ({"model.generator": "resnet_6blocks_antialias", "model.num_downs": "null", "cut.nce_layers": "0,4,30"},
     r"cut\.nce_layers.*0\.\.17"),
])
def test_bad_keys_are_named(tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):
        make(tmp_path, **extra)


def test_cut_keys_are_refused_by_other_methods(tmp_path):
    with pytest.raises(ValueError, match=r"cut\.mode"):
        config.load(None, cyclegan_overrides(tmp_path / "r", tmp_path / "d", **{"cut.mode": "fastcut"}))
    with pytest.raises(ValueError, match="unpaired"):
        config.load(None, cut_overrides(tmp_path / "r", tmp_path / "d", **{"data.kind": "paired"}))


class _RefDown(nn.Module):
    """The CUT reference's Downsample as its paper describes it: reflect pad 1, [1,2,1]^2 / 16, stride 2."""

    def __init__(self, c):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("filt", (torch.outer(a, a) / 16)[None, None].repeat(c, 1, 1, 1))

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class _RefUp(nn.Module):
    """Its Upsample: replicate pad 1, transposed conv with [1,3,3,1]^2 / 64 * 4, crop 1 .. -1."""

    def __init__(self, c):
        super().__init__()
        a = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("filt", (torch.outer(a, a) / 64 * 4)[None, None].repeat(c, 1, 1, 1))

    def forward(self, x):
        y = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.filt, stride=2, padding=2,
                               groups=x.shape[1])
        return y[:, :, 1:, 1:][:, :, :-1, :-1]


class _RefBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        norm = lambda: nn.InstanceNorm2d(c)  # noqa: E731
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm(), nn.ReLU(True),
                                        nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm())

    def forward(self, x):
        return x + self.conv_block(x)


class _RefCUTGenerator(nn.Module):
    """The reference's anti-aliased ResnetGenerator, module for module (its `self.model` Sequential)."""

    def __init__(self, ngf=4, n_blocks=9):
        super().__init__()
        norm = nn.InstanceNorm2d
        m = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), norm(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            m += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, padding=1), norm(ngf * mult * 2), nn.ReLU(True),
                  _RefDown(ngf * mult * 2)]
        m += [_RefBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):
            m += [_RefUp(ngf * mult), nn.Conv2d(ngf * mult, ngf * mult // 2, 3, padding=1),
                  norm(ngf * mult // 2), nn.ReLU(True)]
        m += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*m)

    def forward(self, x):
        return self.model(x)


def test_reference_cut_checkpoint_converts_and_samples(tmp_path, capsys):
    from gen.convert.__main__ import main as convert
    from gen.convert.reference import convert_reference, to_reference
    torch.manual_seed(0)
    ref = _RefCUTGenerator().eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3)
    state = ref.state_dict()
    assert "model.7.filt" in state and "model.25.filt" in state  # the reference saves its filters
    folder = tmp_path / "checkpoints" / "h2z_cut"
    folder.mkdir(parents=True)
    torch.save(state, folder / "latest_net_G.pth")
    (folder / "train_opt.txt").write_text("----- Options -----\n      CUT_mode: FastCUT    [default: CUT]\n"
                                          "         model: cut\n")
    assert convert(["reference", str(folder), "--out", str(tmp_path / "conv")]) == 0
    assert "resnet_9blocks_antialias" in capsys.readouterr().out
    pipe = pipelines.load(tmp_path / "conv")
    assert (pipe.kind, pipe.method) == ("unpaired_translation", "fastcut")
    x = torch.rand(2, 3, 20, 24) * 2 - 1
    with torch.no_grad():
        want = ref(x)
    assert (pipe(x) - want).abs().max() < 1e-4  # float rounding through 9 blocks; a wrong layer is O(1)
    back = to_reference(convert_reference(state).net)  # and back, filters included
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    bad = dict(state, **{"model.7.filt": state["model.7.filt"] * 2})
    with pytest.raises(ValueError, match="blur filter"):
        convert_reference(bad)


def test_compare_puts_cut_beside_cyclegan_with_the_figures_of_evaluate(tmp_path):
    """sample.py compare on unpaired data: one row per run, A -> B in the grid, and each run's
    figures equal to what sample.py evaluate reports for it (the same scoring, the same classifier)."""
    from gen.compare import compare_runs
    from gen.evaluate import evaluate
    from trainers import CycleGANTrainer, Pix2PixTrainer

    root = write_unpaired(tmp_path / "data")
    fast = {"train.max_steps": 2, "train.validate_every": 100, "train.ckpt_every": 100}
    CUTTrainer(config.load(None, cut_overrides(tmp_path / "cut", root, **fast))).fit()
    cfg = config.load(None, cyclegan_overrides(tmp_path / "cyclegan", root, **fast))
    CycleGANTrainer(cfg).fit()
    data = eval_data(cfg, "test")
    result = compare_runs(data, [tmp_path / "cyclegan", tmp_path / "cut"], grid_rows=2)
    assert result.columns == ["input (A)", "cyclegan", "cut"] and len(result.grid_rows) == 2
    rows = {r["run"]: r for r in result.table}
    for name in ("cyclegan", "cut"):
        alone, _ = evaluate(tmp_path / name, data, grid_rows=1)
        for key in ("translated_A_judged_B", "classifier_acc_real_A", "classifier_acc_real_B"):
            assert rows[name][key] == alone[key], (name, key)
    assert "cycle_PSNR_A" in rows["cyclegan"] and "identity_PSNR_B" in rows["cut"]
    assert any("2 A and 2 B test images" in note for note in result.notes)
    # on pairs, CUT is scored as any A -> B translator (as CycleGAN's A -> B generator is)
    paired = tmp_path / "paired"
    write_aligned(paired / "train", 2)
    paired_cfg = config.load(None, tiny_overrides(tmp_path / "p", paired, **{"data.test": "train"}))
    on_pairs = compare_runs(eval_data(paired_cfg, "test"), [tmp_path / "cyclegan", tmp_path / "cut"])
    assert all(0 < r["PSNR"] < 100 for r in on_pairs.table)
    p2p = tmp_path / "pix2pix"
    Pix2PixTrainer(config.load(None, tiny_overrides(p2p, paired, **fast, **{"data.val": "null"}))).fit()
    with pytest.raises(ValueError, match="run pix2pix .* needs paired data"):
        compare_runs(data, [tmp_path / "cut", p2p])
