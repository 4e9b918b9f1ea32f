"""Strict typed config: overrides, unknown keys, wrong types, out-of-range values."""
import pytest

from gen import config
from conftest import ROOT


def test_defaults_and_overrides():
    cfg = config.load(None, ["train.max_steps=7", "data.root=/x", "run.dir=/tmp/r", "train.batch_size=3",
                             "log.wandb=disabled"])
    assert (cfg.train.max_steps, cfg.train.batch_size, cfg.data.root, cfg.run.dir) == (7, 3, "/x", "/tmp/r")
    assert cfg.pix2pix.lambda_l1 == 100 and cfg.train.lr == 2e-4 and cfg.train.beta1 == 0.5


def test_every_shipped_config_loads():
    files = sorted((ROOT / "configs").rglob("*.yaml"))
    assert files
    for f in files:
        config.load(f)


@pytest.mark.parametrize("override,match", [
    ("train.max_step=5", r"unknown config key 'train.max_step'.*train.max_steps"),
    ("trian.max_steps=5", r"unknown config key 'trian'"),
    ("train.max_steps=many", r"train.max_steps"),
    ("train.lr=nan", r"train.lr=nan is not a finite number"),
    ("train.batch_size=-1", r"train.batch_size=-1 must be > 0"),
    ("data.direction=AtoC", r"data.direction='AtoC'.*AtoB"),
    ("log.wandb=sometimes", r"log.wandb.*offline"),
    ("data.crop_size=300", r"data.crop_size=300 is larger than data.load_size=286"),
    ("train.max_steps", r"must look like key=value"),
])
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ValueError, match=match):
        config.load(None, ["data.root=/x", override])


def test_typo_in_yaml_file_names_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("method: pix2pix\ndata:\n  root: /x\n  crop_sise: 128\n")
    with pytest.raises(ValueError, match=r"data.crop_sise.*bad.yaml.*data.crop_size"):
        config.load(f)


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        config.load("nope.yaml")


def test_wandb_mode_defaults(monkeypatch):
    cfg = config.load(None, ["data.root=/x"])
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert config.wandb_mode(cfg) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert config.wandb_mode(cfg) == "online"
    assert config.wandb_mode(config.load(None, ["data.root=/x", "log.wandb=disabled"])) == "disabled"


def test_yaml_round_trip(tmp_path):
    cfg = config.load(None, ["data.root=/x", "train.max_steps=9", "data.val=null"])
    (tmp_path / "c.yaml").write_text(config.to_yaml(cfg))
    assert config.load(tmp_path / "c.yaml") == cfg


def test_the_former_sample_every_key_is_refused_naming_validate_every(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("data:\n  root: data\ntrain:\n  sample_every: 7\n")
    with pytest.raises(ValueError, match=r"train.sample_every in config file .*old.yaml was renamed: "
                                         r"use train.validate_every"):
        config.load(old)
    with pytest.raises(ValueError, match=r"train.sample_every in override 'train.sample_every=9' was "
                                         r"renamed: use train.validate_every"):
        config.load(None, ["data.root=d", "train.sample_every=9"])
    assert config.load(None, ["data.root=d", "train.validate_every=5"]).train.validate_every == 5


def test_a_run_config_written_before_the_rename_still_loads(tmp_path):
    # Every config.yaml saved before the rename holds `sample_every: null`: those runs resume and sample.
    cfg = config.load(None, ["data.root=/x", "train.validate_every=6"])
    saved = config.to_yaml(cfg).replace("validate_every: 6\n", "validate_every: 6\n  sample_every: null\n")
    assert "sample_every: null" in saved
    (tmp_path / "config.yaml").write_text(saved)
    assert config.load(tmp_path / "config.yaml") == cfg


def test_keys_a_method_would_ignore_are_refused():
    ngf = r"model.ngf=32.*not read by method='ddpm' \(for method=ddpm use ddpm.ngf"
    with pytest.raises(ValueError, match=ngf):
        config.load(None, ["method=ddpm", "data.kind=images", "data.root=d", "model.generator=ddpm_small",
                           "model.ngf=32"])
    with pytest.raises(ValueError, match=r"cyclegan.lambda_a=5.0 is not read by method='pix2pix'"):
        config.load(None, ["data.root=d", "cyclegan.lambda_a=5"])
    with pytest.raises(ValueError, match=r"model.d_layers=2 is not read by method='segmentation'"):
        config.load(None, ["method=segmentation", "data.kind=segmentation", "data.direction=BtoA",
                           "data.root=d", "data.num_classes=3", "model.d_layers=2"])


def test_ddpm_unet_refuses_the_pix2pix_knobs():
    from gen.models import UNet
    with pytest.raises(ValueError, match=r"\['norm', 'upsample'\] apply to block_style='pix2pix' only"):
        UNet(channels=(32, 32), block_style="ddpm", norm="instance", upsample="bilinear", norm_groups=8)


def test_channels_last_auto_reads_as_unset(tmp_path):
    from gen import config as config_lib
    assert config_lib.load(None, ["data.root=/x", "train.channels_last=auto"]).train.channels_last is None
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  root: /x\ntrain:\n  channels_last: auto\n")
    assert config_lib.load(path).train.channels_last is None
    assert config_lib.load(path, ["train.channels_last=false"]).train.channels_last is False
