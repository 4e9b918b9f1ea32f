"""On a CUDA machine only (`python -m pytest -m gpu`): every method trains, checkpoints, resumes and
exports on the GPU in each precision. bench/gpu_check.py is the longer, timed version."""
import shutil

import pytest
import torch
from safetensors.torch import load_file

from gen import config
from trainers import TRAINERS, checkpoint
from test_device_audit import AUDIT, CASES

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_train_resume_export_on_cuda(case, precision, tmp_path):
    extra = [f"{k}={v}" for k, v in AUDIT.items() if k != "train.optimizer_impl"]
    extra += [
        "train.device=cuda",
        f"train.mixed_precision={precision}",
        "train.max_steps=4",
        "train.deterministic=true",
    ]
    cfg = config.load(None, CASES[case](tmp_path) + extra)
    trainer = TRAINERS[cfg.method](cfg)
    assert trainer.device.type == "cuda"
    trainer.fit()
    ckpts = checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints")
    final = {p.name: load_file(str(p)) for p in (ckpts[0] / "models").glob("*.safetensors")}
    shutil.rmtree(ckpts[0])  # resume from step 2 and redo steps 3-4
    TRAINERS[cfg.method](cfg).fit()
    again = {p.name: load_file(str(p)) for p in (ckpts[0] / "models").glob("*.safetensors")}
    for name, sd in final.items():
        for k, v in sd.items():
            assert torch.equal(v, again[name][k]), f"{case} {precision}: {name}.{k} differs after resume"
    assert (tmp_path / "run" / "export").is_dir()
