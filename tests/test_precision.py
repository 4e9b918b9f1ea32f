"""fp16 loss scaling, device choice and refused combinations, on the CPU.

fp16 needs a GPU, but its loss scaling does not: these tests give the trainer the CPU GradScaler
that Accelerate would make on a GPU, so every optimizer carries one, and train in fp32 arithmetic.
"""
import math
import shutil

import pytest
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file

from gen import config
from trainers import Pix2PixTrainer, checkpoint, devices
from conftest import tiny_overrides


def fp16_like(cfg, **scaler):
    trainer = Pix2PixTrainer(cfg)
    trainer.accelerator.scaler = torch.amp.GradScaler(
        "cpu", **scaler
    )  # what Accelerate builds for fp16 on CUDA
    return trainer


def weights(run_dir):
    ckpt = checkpoint.checkpoint_dirs(run_dir / "checkpoints")[0]
    return load_file(str(ckpt / "models" / "generator.safetensors")), torch.load(
        ckpt / "state.pt", weights_only=True
    )


def test_every_optimizer_gets_its_own_loss_scale_and_accumulation_stays_exact(tmp_path, aligned_root):
    """grad_accum=2 with a scale that doubles at every update: D's update must not rescale G's
    half-accumulated gradients. Power-of-two scales are exact, so the run equals plain fp32."""
    extra = {"train.grad_accum": 2, "train.max_steps": 3, "train.ckpt_every": 3, "model.dropout": 0.0}
    plain = Pix2PixTrainer(config.load(None, tiny_overrides(tmp_path / "plain", aligned_root, **extra)))
    plain.fit()
    scaled = fp16_like(config.load(None, tiny_overrides(tmp_path / "scaled", aligned_root, **extra)),
                       init_scale=2.0 ** 8, growth_interval=1)
    scaled.fit()
    scalers = scaled.scalers()
    assert (
        set(scalers) == {"generator", "discriminator"}
        and scalers["generator"] is not scalers["discriminator"]
    )
    assert scalers["generator"].get_scale() == 2.0 ** 11  # grew once per update: 3 steps, no overflow
    (w_plain, _), (w_scaled, state) = weights(tmp_path / "plain"), weights(tmp_path / "scaled")
    for k in w_plain:
        assert torch.allclose(w_plain[k], w_scaled[k], atol=1e-6), k
    assert state["scalers"]["generator"]["scale"] == 2.0 ** 11  # the loss scale is in the checkpoint


def test_overflow_steps_back_off_and_are_not_bad_updates(tmp_path, aligned_root):
    """A scale so large that the first steps overflow: the scaler skips them and halves the scale; skip
    mode does not count them as bad updates, and clipping keeps working at the next step."""
    extra = {"train.nonfinite": "skip", "train.max_grad_norm": 1.0, "train.max_steps": 6}
    trainer = fp16_like(config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **extra)),
                        init_scale=2.0 ** 127)
    trainer.fit()
    assert trainer.skipped_updates == 0
    assert trainer.scalers()["generator"].get_scale() < 2.0 ** 127
    # Every overflow halves a scale (no growth within 2000 steps): the count is the halvings, exactly.
    halvings = sum(math.log2(2.0 ** 127 / s.get_scale()) for s in trainer.scalers().values())
    assert trainer.amp_skipped == halvings > 0


def test_resume_restores_the_loss_scale(tmp_path, aligned_root):
    """At 2**124, G's loss overflows at steps 1-3 (the scale backs off to 2**121) and trains from step 4.
    Resumed from step 3 it must train at steps 4-6 too: a fresh scale would overflow and skip them."""
    extra = {"train.max_steps": 6, "train.ckpt_every": 3, "model.dropout": 0.0}
    scale = {"init_scale": 2.0 ** 124}
    fp16_like(config.load(None, tiny_overrides(tmp_path / "ref", aligned_root, **extra)), **scale).fit()
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **extra))
    fp16_like(cfg, **scale).fit()
    at_3 = load_file(str(checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints")[1] / "models" /
                         "generator.safetensors"))
    shutil.rmtree(checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints")[0])  # back to step 3
    resumed = fp16_like(cfg, **scale)
    resumed.fit()
    assert resumed.start_step == 3
    (ref, state), (got, _) = weights(tmp_path / "ref"), weights(tmp_path / "run")
    assert state["scalers"]["generator"]["scale"] == 2.0 ** 121
    assert not all(torch.equal(ref[k], at_3[k]) for k in ref)  # G trained after step 3
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_refused_at_start_with_the_key_named(tmp_path, aligned_root):
    with pytest.raises(ValueError, match="train.mixed_precision=fp16 needs a GPU"):
        Pix2PixTrainer(
            config.load(None, tiny_overrides(tmp_path, aligned_root, **{"train.mixed_precision": "fp16"}))
        )
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="train.device=cuda"):
            Pix2PixTrainer(
                config.load(None, tiny_overrides(tmp_path, aligned_root, **{"train.device": "cuda"}))
            )

    class Sharded:
        distributed_type = DistributedType.FSDP
    with pytest.raises(ValueError, match="FSDP is not supported"):
        devices.check_distributed(Sharded())


def test_start_line_names_device_precision_and_processes(tmp_path, aligned_root, capsys):
    trainer = Pix2PixTrainer(
        config.load(None, tiny_overrides(tmp_path, aligned_root, **{"train.max_steps": 1}))
    )
    trainer.fit()
    out = capsys.readouterr().out
    assert "pix2pix: device cpu, precision fp32 (auto: " in out  # the default, resolved and explained
    assert "1 process(es), 2 images per step" in out
    if torch.version.cuda is not None:  # a CUDA build on a machine (or test session) without a GPU says why
        assert "note: training on the CPU" in out


def test_data_workers_default_by_device(tmp_path, aligned_root):
    cfg = config.load(None, tiny_overrides(tmp_path, aligned_root))
    assert cfg.data.num_workers is None
    assert devices.data_workers(cfg, torch.device("cpu"), 1) == 0
    assert devices.data_workers(cfg, torch.device("cuda"), 1) >= 1
    pinned = config.load(None, tiny_overrides(tmp_path, aligned_root, **{"data.num_workers": 0}))
    assert devices.data_workers(pinned, torch.device("cuda"), 1) == 0


def test_gradient_accumulation_equals_the_big_batch(tmp_path, aligned_root):
    """2 micro-batches of 2 accumulate into the update of one batch of 4 (per-sample L1, no norm, no
    dropout: no statistic couples the samples)."""
    exact = {"pix2pix.gan_mode": "none", "model.norm": "none", "model.dropout": 0.0, "train.max_steps": 3,
             "train.ckpt_every": 3, "train.lr": 1e-3}
    Pix2PixTrainer(config.load(None, tiny_overrides(tmp_path / "accum", aligned_root, **dict(
        exact, **{"train.batch_size": 2, "train.grad_accum": 2})))).fit()
    Pix2PixTrainer(config.load(None, tiny_overrides(tmp_path / "big", aligned_root, **dict(
        exact, **{"train.batch_size": 4})))).fit()
    (accum, _), (big, _) = weights(tmp_path / "accum"), weights(tmp_path / "big")
    diff = torch.cat([(accum[k] - big[k]).abs().flatten() for k in big])
    assert diff.mean() < 1e-6 and diff.max() < 1e-4, (diff.mean(), diff.max())


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_hardware_probe_and_is_recorded(tmp_path, aligned_root, monkeypatch,
                                                                   capsys, native):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **{
        "train.mixed_precision": "auto", "train.max_steps": 1}))
    trainer = Pix2PixTrainer(cfg)
    expected = "bf16" if native else "fp32"
    assert trainer.cfg.train.mixed_precision == expected
    assert trainer.accelerator.mixed_precision == ("bf16" if native else "no")
    trainer.fit()
    assert f"precision {expected} (auto: this CPU" in capsys.readouterr().out
    assert config.load(tmp_path / "run" / "config.yaml").train.mixed_precision == expected


def test_cpu_bf16_probe_reads_the_cpu_flags(monkeypatch):
    import pathlib
    monkeypatch.delenv("GEN_CPU_BF16")
    info = pathlib.Path("/proc/cpuinfo")
    flags = info.read_text().split() if info.exists() else []
    assert devices.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_channels_last_auto_follows_method_and_device():
    """train.channels_last unset (auto): on for the DDPM U-Net on the CPU in fp32 (measured faster
    there; slower under bf16 autocast), off for the other methods and on GPUs; an explicit value is kept."""
    import dataclasses
    for precision in ("fp32", "bf16"):
        base = config.ExperimentConfig()
        base = dataclasses.replace(base, train=dataclasses.replace(base.train, mixed_precision=precision))
        for method, cpu, expected in (("ddpm", True, precision == "fp32"), ("ddpm", False, False),
                                      ("pix2pix", True, False), ("colorization", True, False)):
            assert devices.resolve_channels_last(base, cpu, method).train.channels_last is expected
    for explicit in (True, False):
        cfg = config.load(None, ["data.root=/x", f"train.channels_last={str(explicit).lower()}"])
        assert devices.resolve_channels_last(cfg, True, "ddpm").train.channels_last is explicit
        assert devices.resolve_channels_last(cfg, False, "pix2pix").train.channels_last is explicit


def test_cpu_bf16_probe_can_be_forced_and_refuses_other_values(monkeypatch):
    for value, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("GEN_CPU_BF16", value)
        assert devices.cpu_has_native_bf16() is expected
    monkeypatch.setenv("GEN_CPU_BF16", "yes")
    with pytest.raises(ValueError, match="GEN_CPU_BF16='yes'"):
        devices.cpu_has_native_bf16()


def test_a_resumed_run_keeps_the_precision_and_layout_it_started_with(tmp_path, aligned_root, monkeypatch,
                                                                        capsys):
    """Resumed with the defaults (auto precision, auto layout) on a bf16-native CPU, an fp32 run stays
    fp32 (a new default or another machine does not switch a run half-way); a new run gets bf16."""
    run = tmp_path / "run"
    Pix2PixTrainer(config.load(None, tiny_overrides(run, aligned_root, **{
        "train.mixed_precision": "fp32", "train.channels_last": "true", "train.max_steps": 2}))).fit()
    monkeypatch.setenv("GEN_CPU_BF16", "1")
    resumed = Pix2PixTrainer(config.load(None, tiny_overrides(run, aligned_root, **{"train.max_steps": 3})))
    assert resumed.cfg.train.mixed_precision == "fp32" and resumed.cfg.train.channels_last is True
    assert "kept from the run being resumed" in resumed.precision_note
    resumed.fit()
    assert config.load(run / "config.yaml").train.mixed_precision == "fp32"
    fresh = Pix2PixTrainer(config.load(None, tiny_overrides(tmp_path / "new", aligned_root)))
    assert fresh.cfg.train.mixed_precision == "bf16" and fresh.cfg.train.channels_last is False
    forced = Pix2PixTrainer(config.load(None, tiny_overrides(run, aligned_root, **{
        "train.max_steps": 4, "train.mixed_precision": "bf16"})))
    assert forced.cfg.train.mixed_precision == "bf16"  # an explicit choice still wins
