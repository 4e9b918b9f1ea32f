"""model.norm=sync_batch / model.d_norm=sync_batch: batch norm over the global batch of every process
(gen/models/sync_batchnorm.py). With one process it is batch norm exactly; with several it equals one
process running the whole batch, where per-rank batch norm does not (docs/multi_gpu.md)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

from conftest import tiny_overrides

SYNC = {"model.norm": "sync_batch", "model.d_norm": "sync_batch", "model.dropout": 0.0, "train.max_steps": 4,
        "train.ckpt_every": 2, "train.validate_every": 4, "train.batch_size": 2, "train.lr": 1e-3}
SPLIT = (1, 3)  # per-rank batch sizes of the layer test: unequal, as any-size inputs can be


def bn_pair(cls=None, channels: int = 3):
    """A SyncBatchNorm2d and a BatchNorm2d with the same (non-trivial) affine parameters."""
    from gen.models.sync_batchnorm import SyncBatchNorm2d
    nets = (cls or SyncBatchNorm2d)(channels), nn.BatchNorm2d(channels)
    for net in nets:
        with torch.no_grad():
            net.weight.copy_(torch.linspace(0.5, 1.5, channels))
            net.bias.copy_(torch.linspace(-0.2, 0.3, channels))
    return nets


def layer_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(SPLIT), 3, 5, 5, generator=g) * 3 + 1  # (4, 3, 5, 5), mean 1, std 3
    return x, torch.randn(x.shape, generator=g)  # input, upstream gradient


def forward_backward(bn: nn.Module, x: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.clone().requires_grad_()
    y = bn(x)
    (y * w).sum().backward()
    return {"y": y.detach(), "grad_x": x.grad, "grad_weight": bn.weight.grad, "grad_bias": bn.bias.grad,
            "running_mean": bn.running_mean.clone(), "running_var": bn.running_var.clone()}


def test_one_process_is_batch_norm_exactly(tmp_path):
    """No process group, and a process group of one: bit-identical to nn.BatchNorm2d in training,
    evaluation and the paper's test-batch statistics; same state dict."""
    from gen.models.inference import inference_semantics
    x, w = layer_data()
    sync, plain = bn_pair()
    assert sync.state_dict().keys() == plain.state_dict().keys()
    for got, want in zip(forward_backward(sync, x, w).values(), forward_backward(plain, x, w).values()):
        assert torch.equal(got, want)
    for mode in ("eval", "paper"):
        with torch.no_grad(), inference_semantics(sync, mode), inference_semantics(plain, mode):
            assert torch.equal(sync(x), plain(x))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        sync, plain = bn_pair()
        for got, want in zip(forward_backward(sync, x, w).values(), forward_backward(plain, x, w).values()):
            assert torch.equal(got, want)
    finally:
        dist.destroy_process_group()


def _layer_worker(rank: int, world: int, init: str, out: str) -> None:
    """Rank r normalises its own slice of the batch (sizes SPLIT) with a SyncBatchNorm2d and with a
    per-rank BatchNorm2d; writes both, and the parameter gradients summed over the ranks."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    x, w = layer_data()
    lo = sum(SPLIT[:rank])
    rows = slice(lo, lo + SPLIT[rank])
    sync, plain = bn_pair()
    result = {}
    for name, bn in (("sync", sync), ("plain", plain)):
        got = forward_backward(bn, x[rows], w[rows])
        for k in ("grad_weight", "grad_bias"):
            dist.all_reduce(got[k])  # the sum of every rank's loss is the whole batch's loss
        result[name] = {k: v.tolist() for k, v in got.items()}
    result["bf16_dtype"] = str(sync(x[rows].bfloat16()).dtype)
    # Evaluation communicates nothing: validation runs on the main process alone and must not hang.
    if rank == 0:
        from gen.models.inference import inference_semantics
        with torch.no_grad(), inference_semantics(sync, "paper"):
            sync(x[rows])
        sync.eval()(x[rows])
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_normalise_by_the_global_batch(tmp_path):
    """2 processes holding 1 and 3 images: sync_batch gives the outputs, input and parameter gradients
    and running statistics of batch norm over all 4; per-rank batch norm gives other outputs."""
    mp.spawn(_layer_worker, args=(2, f"file://{tmp_path / 'pg'}", str(tmp_path)), nprocs=2, join=True)
    x, w = layer_data()
    whole = forward_backward(bn_pair()[1], x, w)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    sync = {k: [torch.tensor(r["sync"][k]) for r in ranks] for k in whole}
    for k in ("y", "grad_x"):  # per-image values: the ranks' slices in order
        assert torch.cat(sync[k]) == pytest.approx(whole[k], abs=1e-5), k
    for k in ("grad_weight", "grad_bias", "running_mean", "running_var"):  # shared: equal on every rank
        for value in sync[k]:
            assert value == pytest.approx(whole[k], abs=1e-5, rel=1e-6), k
    per_rank = torch.cat([torch.tensor(r["plain"]["y"]) for r in ranks])
    assert (per_rank - whole["y"]).abs().max() > 0.1  # the image alone on rank 0 normalises to ~0
    assert ranks[0]["bf16_dtype"] == "torch.bfloat16"


def test_two_process_training_equals_one_process_with_the_whole_batch(tmp_path, aligned_root):
    """pix2pix with sync batch norm in G and D: 2 processes x batch 2 == 1 process x batch 4 on the
    same samples (default batch norm differs by 0.03 here after 4 steps). The export is a batch-norm
    network: the pipeline and sample.py load it."""
    from gen import config
    from gen.pipelines import load
    from gen.models import UNet
    from trainers import Pix2PixTrainer, checkpoint
    from test_distributed import torchrun
    from conftest import run_sample

    proc = torchrun(tiny_overrides(tmp_path / "ddp", aligned_root, **SYNC))
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = dict(SYNC, **{"train.batch_size": 4})
    Pix2PixTrainer(config.load(None, tiny_overrides(tmp_path / "one", aligned_root, **one))).fit()

    def weights(run, newest=0):
        ckpt = checkpoint.checkpoint_dirs(tmp_path / run / "checkpoints")[newest]
        return {f"{p.stem}.{k}": v for p in (ckpt / "models").glob("*.safetensors")
                for k, v in load_file(str(p)).items()}
    ddp, single = weights("ddp"), weights("one")
    assert any(k.startswith("discriminator.") for k in ddp) and any("running_var" in k for k in ddp)
    diff = max((ddp[k].float() - single[k].float()).abs().max().item() for k in single)
    assert diff < 2e-5  # G: 6e-6 (fp32 rounding through Adam); per-rank batch norm: 0.03
    older = weights("ddp", newest=1)
    assert max((older[k].float() - ddp[k].float()).abs().max().item() for k in ddp) > 1e-3  # it trained

    pipe = load(tmp_path / "ddp")
    assert pipe.net.config.norm == "sync_batch"
    plain = UNet.from_config({**pipe.net.config, "norm": "batch"})
    plain.load_state_dict(pipe.net.state_dict())
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    for mode in ("paper", "eval"):
        pipe.inference = mode
        ref = type(pipe)(plain, inference=mode, seed=pipe.seed)
        assert torch.equal(pipe(x), ref(x)), mode
    out = tmp_path / "out"
    done = run_sample(tmp_path / "ddp", "--input", aligned_root / "val", "--output", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list(out.glob("*.png"))) == 2


def test_config_accepts_sync_batch_for_both_norms():
    from gen import config
    cfg = config.load(None, ["data.kind=builtin", "model.norm=sync_batch", "model.d_norm=sync_batch"])
    assert (cfg.model.norm, cfg.model.d_norm) == ("sync_batch", "sync_batch")
    with pytest.raises(ValueError, match="sync_batch"):  # the error lists it among the choices
        config.load(None, ["data.kind=builtin", "model.norm=syncbatch"])


@pytest.mark.parametrize("preset", ["unet", "patchgan", "pixelgan", "resnet_6blocks", "fcn8s"])
def test_every_network_builds_sync_batch_layers(preset):
    """Wherever model.norm / model.d_norm choose the norm, sync_batch gives SyncBatchNorm2d layers
    with the batch-norm parameter layout (no conv biases before them, as the reference)."""
    from gen.models import create_model
    from gen.models.sync_batchnorm import SyncBatchNorm2d
    kw = {"num_downs": 5, "ngf": 8} if preset == "unet" else {"ndf": 8} if "gan" in preset else {"ngf": 8}
    sync, plain = create_model(preset, norm="sync_batch", **kw), create_model(preset, norm="batch", **kw)
    kinds = {type(m) for m in sync.modules()}
    assert SyncBatchNorm2d in kinds and nn.BatchNorm2d not in kinds
    shapes = [{k: v.shape for k, v in net.state_dict().items()} for net in (sync, plain)]
    assert shapes[0] == shapes[1]


def test_reference_conversion_of_a_sync_batch_network():
    """gen.convert: a sync_batch net written in the reference layout (as the reference's --norm
    sync_batch saves it) converts back to the batch-norm preset with the same function."""
    from gen.convert.reference import convert_reference, to_reference
    from gen.models import create_model, init_weights
    torch.manual_seed(0)
    net = init_weights(create_model("unet", num_downs=6, ngf=8, norm="sync_batch", dropout=0.0)).eval()
    conv = convert_reference(to_reference(net), dropout=0.0)
    assert conv.options["norm"] == "batch"
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(conv.net(x), net(x))


def test_init_from_between_batch_and_sync_batch():
    """Fine-tuning a batch-norm export with sync_batch (and back) is the same function: accepted.
    A real difference of function (instance vs none: same tensors) is still refused."""
    from gen.models import create_model
    from trainers.init_from import copy_checked
    src = create_model("unet", num_downs=5, ngf=8, norm="batch")
    dst = create_model("unet", num_downs=5, ngf=8, norm="sync_batch")
    assert copy_checked(dst, src.state_dict(), dict(src.config), "generator", "src") == len(src.state_dict())
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())
    copy_checked(src, dst.state_dict(), dict(dst.config), "generator", "src")
    inst, none = (create_model("unet", num_downs=5, ngf=8, norm=n) for n in ("instance", "none"))
    with pytest.raises(ValueError, match="another function"):
        copy_checked(none, inst.state_dict(), dict(inst.config), "generator", "src")


def test_torch_kernels_keep_parameters_state_and_hooks():
    """On a GPU the trainer swaps in torch.nn.SyncBatchNorm: the optimizer's parameter objects, the
    state dict and forward hooks (segmentation's frozen encoder) carry over; outputs are unchanged."""
    from gen.models import create_model
    from gen.models.sync_batchnorm import SyncBatchNorm2d, use_torch_kernels
    torch.manual_seed(0)
    net = create_model("unet", num_downs=5, ngf=8, norm="sync_batch", dropout=0.0)
    params, state = list(net.parameters()), {k: v.clone() for k, v in net.state_dict().items()}
    first = next(m for m in net.modules() if isinstance(m, SyncBatchNorm2d))
    calls = []
    first.register_forward_pre_hook(lambda m, args: calls.append(m.training))
    x = torch.rand(2, 3, 32, 32)
    want = net(x)
    net.load_state_dict(state)  # undo the running-statistics update of that forward
    assert use_torch_kernels(net) == 7
    assert not any(isinstance(m, SyncBatchNorm2d) for m in net.modules())
    assert all(a is b for a, b in zip(net.parameters(), params))
    assert net.state_dict().keys() == state.keys()
    assert torch.equal(net(x), want) and calls == [True, True]


def test_a_batch_norm_run_resumes_with_sync_batch_and_back(tmp_path, aligned_root):
    """Moving a run from one GPU to many: batch <-> sync_batch is the same network, so the resume
    check lets it through (other norm changes stay refused), and the weights carry over."""
    from gen import config
    from trainers import Pix2PixTrainer

    run = tmp_path / "run"
    Pix2PixTrainer(config.load(None, tiny_overrides(run, aligned_root, **{"train.max_steps": 3}))).fit()
    synced = Pix2PixTrainer(config.load(None, tiny_overrides(run, aligned_root, **{
        "train.max_steps": 6, "model.norm": "sync_batch", "model.d_norm": "sync_batch"})))
    synced.fit()
    assert synced.start_step == 3 and synced.step == 6
    with pytest.raises(ValueError, match=r"model.norm: 'sync_batch' -> 'instance'"):
        Pix2PixTrainer(config.load(None, tiny_overrides(run, aligned_root, **{
            "train.max_steps": 9, "model.norm": "instance", "model.d_norm": "sync_batch"}))).fit()
