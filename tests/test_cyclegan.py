"""CycleGAN: the image pool against a hand-checked sequence, each loss term by hand, identity-loss
handling for unequal channels, ResNet generator sizes, and learning a known colour transform."""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gen import config, pipelines
from gen.losses.image_pool import ImagePool
from gen.models import create_model
from gen.data.build import eval_data
from gen.evaluate import SavedOutputs
from gen.metrics.domain import ClassifierSettings, DomainClassifier, predict_domain
from safetensors.torch import load_file

from trainers import CycleGANTrainer, checkpoint
from conftest import ROOT, grid_size


def swap_rb(x):
    return x[:, [2, 1, 0]]


def write_unpaired(root, n=8, size=40, seed=0):
    """Domain A: reddish smooth fields; domain B: the same kind of fields with R and B swapped."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for dom in "AB":
            (root / f"{split}{dom}").mkdir(parents=True, exist_ok=True)
            for i in range(n if split == "train" else 2):
                coarse = rng.uniform(0, 1, (4, 4, 3)) * [100, 120, 60] + [150, 40, 20]
                img = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR)
                arr = np.asarray(img)
                (Image.fromarray(arr[..., ::-1].copy()) if dom == "B" else img).save(
                    root / f"{split}{dom}" / f"{i}.png"
                )
    return root


def cyclegan_overrides(run_dir, root, **extra):
    items = {
        "method": "cyclegan",
        "run.dir": run_dir,
        "data.kind": "unpaired",
        "data.root": root,
        "data.val": "test",
        "data.test": "test",
        "data.load_size": 36,
        "data.crop_size": 32,
        "model.generator": "unet",
        "model.num_downs": 5,
        "model.ngf": 8,
        "model.ndf": 8,
        "model.norm": "instance",
        "model.d_norm": "instance",
        "model.dropout": 0.0,
        "train.batch_size": 2,
        "train.max_steps": 4,
        "train.log_every": 2,
        "train.validate_every": 2,
        "train.ckpt_every": 2,
        "log.wandb": "disabled",
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def make(tmp_path, root, **extra):
    t = CycleGANTrainer(config.load(None, cyclegan_overrides(tmp_path / "run", root, **extra)))
    t.build_data()
    t.build()
    t.prepare()
    return t


def test_resnet_generator_counts():
    assert sum(p.numel() for p in create_model("resnet_9blocks").parameters()) == 11_378_179
    g = create_model("resnet_6blocks", ngf=8).eval()
    assert g.forward_any_size(torch.randn(1, 3, 30, 43)).shape == (1, 3, 30, 43)


def test_image_pool_hand_checked_sequence():
    pool = ImagePool(size=2, seed=0)
    img = [torch.full((1, 1, 1), float(v)) for v in range(6)]
    # Filling: returned as is and stored.
    assert pool.query(torch.stack([img[0], img[1]])).flatten().tolist() == [0.0, 1.0]
    # Full: replay the pool's own coin flips and slot picks to get the expected sequence by hand.
    twin = torch.Generator().set_state(pool.generator.get_state())
    stored, expected = [0.0, 1.0], []
    for v in (2.0, 3.0, 4.0, 5.0):
        if torch.rand(1, generator=twin).item() < 0.5:
            k = int(torch.randint(0, 2, (1,), generator=twin))
            expected.append(stored[k])
            stored[k] = v
        else:
            expected.append(v)
    got = pool.query(torch.stack(img[2:])).flatten().tolist()
    assert got == expected and sorted(t.item() for t in pool.images) == sorted(stored)
    assert any(e != v for e, v in zip(expected, (2.0, 3.0, 4.0, 5.0)))  # some history was returned (seed 0)
    state = pool.state_dict()
    other = ImagePool(size=2, seed=99)
    other.load_state_dict(state)
    x = torch.stack([torch.full((1, 1, 1), 9.0)] * 4)
    assert torch.equal(other.query(x), pool.query(x))
    assert ImagePool(size=0).query(x).data_ptr() != 0


def test_loss_terms_match_hand_computation(tmp_path):
    root = write_unpaired(tmp_path / "data")
    torch.manual_seed(0)
    t = make(tmp_path, root)
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    g_a, g_b = copy.deepcopy(t.models["G_A"]), copy.deepcopy(t.models["G_B"])
    d_a, d_b = copy.deepcopy(t.models["D_A"]), copy.deepcopy(t.models["D_B"])
    with torch.no_grad():
        fb, fa = g_a(a), g_b(b)
        expect = {
            "G_A": ((d_a(fb) - 1) ** 2).mean(),
            "G_B": ((d_b(fa) - 1) ** 2).mean(),
            "cycle_A": 10 * (g_b(fb) - a).abs().mean(),
            "cycle_B": 10 * (g_a(fa) - b).abs().mean(),
            "idt_A": 10 * 0.5 * (g_a(b) - b).abs().mean(),
            "idt_B": 10 * 0.5 * (g_b(a) - a).abs().mean(),
        }
    losses = t.train_step({"A": a, "B": b})
    for k, v in expect.items():
        assert losses[k].item() == pytest.approx(v.item(), rel=1e-4, abs=1e-6), k
    assert losses["G"].item() == pytest.approx(sum(v.item() for v in expect.values()), rel=1e-4)
    # D step after the G step: D_A on real B and the pooled (while filling: the same) fake B, halved.
    d_a_loss = 0.5 * (((d_a(b) - 1) ** 2).mean() + (d_a(fb) ** 2).mean())
    assert losses["D_A"].item() == pytest.approx(d_a_loss.item(), rel=1e-4)


def test_identity_loss_off_for_unequal_channels(tmp_path):
    root = write_unpaired(tmp_path / "data")
    with pytest.warns(UserWarning, match="identity loss switched off: domain A has 1 channel"):
        t = make(tmp_path, root, **{"data.channels_a": 1})
    losses = t.train_step({"A": torch.rand(2, 1, 32, 32), "B": torch.rand(2, 3, 32, 32)})
    assert "idt_A" not in losses and losses["cycle_A"].item() > 0
    assert t.models["G_A"].config.in_channels == 1 and t.models["G_B"].config.out_channels == 1


def test_learns_known_colour_transform(tmp_path):
    """A -> B is 'swap R and B': G_A(test A) must approach swap_rb(test A)."""
    root = write_unpaired(tmp_path / "data", n=16)
    torch.manual_seed(0)
    t = make(tmp_path, root, **{"train.lr": 1e-3, "cyclegan.lambda_identity": 0.0})
    test_a = torch.stack([t.val_set[i]["A"] for i in range(2)])

    def error():
        g = t.unwrap("G_A").eval()
        with torch.no_grad():
            out = g(test_a)
        g.train()
        return (out - swap_rb(test_a)).abs().mean().item()

    before = error()
    loader = iter(t.train_loader(t.train_set, 0))
    for _ in range(100):
        t.train_step(next(loader))
    after = error()
    print(f"L1 to the true mapping: {before:.3f} untrained -> {after:.3f}")
    assert after < 0.5 * before and after < 0.2, (before, after)


def test_fit_resume_export_and_both_directions(tmp_path):
    root = write_unpaired(tmp_path / "data")
    args = cyclegan_overrides(tmp_path / "run", root)
    CycleGANTrainer(config.load(None, args)).fit()
    pools = torch.load(
        next((tmp_path / "run" / "checkpoints").glob("step_*/rng_rank0.pt")), weights_only=True
    )
    assert pools["rank_state"]["fake_B"]["images"].shape[0] == 8  # 4 steps x batch 2 < 50: all kept
    x = torch.rand(1, 3, 37, 29) * 2 - 1
    ab, ba = (
        pipelines.load(tmp_path / "run", direction="AtoB"),
        pipelines.load(tmp_path / "run", direction="BtoA"),
    )
    assert ab(x).shape == (1, 3, 37, 29) and not torch.equal(ab(x), ba(x))
    assert (tmp_path / "run" / "samples" / "grid_00000004.png").is_file()


def test_killed_run_resumes_to_identical_weights(tmp_path):
    """Pools and their RNG are in the checkpoint: a SIGKILLed run resumes bit-identically."""
    root = write_unpaired(tmp_path / "data")
    CycleGANTrainer(config.load(None, cyclegan_overrides(tmp_path / "ref", root))).fit()
    args = cyclegan_overrides(tmp_path / "run", root)
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    run = lambda extra: subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        env=dict(env, **extra),  # noqa: E731
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run({"GEN_FAULT": "after_checkpoint:2"}).returncode == -9
    assert run({}).returncode == 0
    for name in ("G_A", "G_B", "D_A", "D_B"):
        ref, got = [
            load_file(
                str(checkpoint.checkpoint_dirs(d / "checkpoints")[0] / "models" / f"{name}.safetensors")
            )
            for d in (tmp_path / "ref", tmp_path / "run")
        ]
        assert all(torch.equal(ref[k], got[k]) for k in ref), name


def judged_b_by_hand(run_dir, outputs) -> float:
    """The share of the saved A->B translations (PNG, 8-bit) the run's cached domain classifier calls B."""
    net = DomainClassifier(ClassifierSettings().width)
    net.load_state_dict(load_file(str(run_dir / "domain_classifier.safetensors")))
    files = sorted((outputs / "AtoB").rglob("*.png"))
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))).permute(2, 0, 1)
                     for f in files]).float() / 127.5 - 1
    return float(predict_domain(net.eval(), x).float().mean())


def test_evaluate_unpaired_scores_cycle_and_domain(tmp_path):
    from gen.evaluate import evaluate
    root = write_unpaired(tmp_path / "data")
    cfg = config.load(None, cyclegan_overrides(tmp_path / "run", root))
    CycleGANTrainer(cfg).fit()
    result, grid = evaluate(tmp_path / "run", eval_data(cfg, "test"), grid_rows=2,
                            saved=SavedOutputs(tmp_path / "out"))
    assert result["images_A"] == 2 and result["images_B"] == 2
    assert 0 < result["cycle_PSNR_A"] < 100 and 0 < result["cycle_PSNR_B"] < 100
    # Reddish vs bluish: a classifier trained on the real train images separates the real test images.
    assert result["classifier_acc_real_A"] == 1.0 and result["classifier_acc_real_B"] == 1.0
    assert result["translated_A_judged_B"] == judged_b_by_hand(tmp_path / "run", tmp_path / "out")
    assert grid.size == grid_size(6, 2, 32)
    assert (tmp_path / "run" / "domain_classifier.safetensors").is_file()
