"""Generator EMA for the GAN methods (train.ema_decay): the export, validation and sample.py use the
averaged weights; model.init_from starts the average from the loaded weights; bad values refused."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_overrides, write_aligned
from gen import config, pipelines
from gen.data.build import eval_data
from gen.evaluate import evaluate
from trainers import Pix2PixTrainer


def test_export_and_validation_use_the_averaged_generator(tmp_path):
    write_aligned(tmp_path / "d" / "train", 4)
    write_aligned(tmp_path / "d" / "val", 2, seed=1)
    cfg = config.load(None, tiny_overrides(tmp_path / "run", tmp_path / "d", **{
        "train.ema_decay": 0.9, "train.max_steps": 4, "train.eval_batches": 2}))
    trainer = Pix2PixTrainer(cfg)
    trainer.fit()
    shadow = trainer.ema.emas["generator"].shadow_params
    exported = pipelines.load(tmp_path / "run").net
    live = trainer.unwrap("generator")
    names = [n for n, _ in live.named_parameters()]
    for name, avg, p in zip(names, shadow, exported.parameters()):
        assert torch.equal(avg.cpu(), p.detach()), name
    assert any(not torch.equal(a.cpu(), q.detach().cpu()) for a, q in zip(shadow, live.parameters()))
    logged = trainer.validate(4)
    scored, _ = evaluate(tmp_path / "run", eval_data(cfg, "val"), max_images=2, grid_rows=2)
    assert all(scored[k] == logged[k] for k in ("L1", "PSNR", "SSIM"))


def test_init_from_starts_the_average_from_the_loaded_weights(tmp_path):
    write_aligned(tmp_path / "d" / "train", 4)
    first = config.load(None, tiny_overrides(tmp_path / "a", tmp_path / "d", **{"train.max_steps": 2,
                                                                              "data.val": "null"}))
    Pix2PixTrainer(first).fit()
    cfg = config.load(None, tiny_overrides(tmp_path / "b", tmp_path / "d", **{
        "train.max_steps": 2, "data.val": "null", "train.ema_decay": 0.999,
        "model.init_from": tmp_path / "a"}))
    trainer = Pix2PixTrainer(cfg)
    trainer.setup()
    loaded = pipelines.load(tmp_path / "a").net
    for avg, p in zip(trainer.ema.emas["generator"].shadow_params, loaded.parameters()):
        assert torch.equal(avg.cpu(), p.detach())


def test_bad_decays_and_methods_without_a_generator_average_are_refused(tmp_path):
    from test_segmentation import overrides
    with pytest.raises(ValueError, match="train.ema_decay=1.5 must be in"):
        config.load(None, tiny_overrides(tmp_path / "r", tmp_path, **{"train.ema_decay": 1.5}))
    with pytest.raises(ValueError, match="train.ema_decay averages a GAN method's generator"):
        config.load(None, overrides(tmp_path, **{"train.ema_decay": 0.999}))
