"""diffusers `UNet2DModel` (the DDPM layout: DownBlock2D / AttnDownBlock2D levels, a UNetMidBlock2D)
<-> gen's DiffusionUNet, weights copied tensor for tensor.

The two share the architecture (Ho et al. 2020); names differ (`down_blocks.i.resnets.j` vs
`downs.i.blocks.j`) and gen fuses the attention's q, k, v projections into one `qkv` Linear (the three
weight matrices stacked). diffusers options that gen does not have are refused by name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import torch

from ..models.diffusion_unet import DiffusionUNet

# UNet2DModel options gen's DiffusionUNet reproduces only at these values
FIXED = {
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "mid_block_type": "UNetMidBlock2D",
    "mid_block_scale_factor": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "act_fn": "silu",
    "attn_norm_num_groups": None,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
}
DOWN_TYPES, UP_TYPES = ("DownBlock2D", "AttnDownBlock2D"), ("UpBlock2D", "AttnUpBlock2D")

_RENAMES = [  # gen name pattern -> diffusers name
    (r"^time_embedding\.mlp\.0\.", "time_embedding.linear_1."),
    (r"^time_embedding\.mlp\.2\.", "time_embedding.linear_2."),
    (r"^downs\.(\d+)\.blocks\.", r"down_blocks.\1.resnets."),
    (r"^ups\.(\d+)\.blocks\.", r"up_blocks.\1.resnets."),
    (r"^downs\.(\d+)\.attentions\.", r"down_blocks.\1.attentions."),
    (r"^ups\.(\d+)\.attentions\.", r"up_blocks.\1.attentions."),
    (r"^downs\.(\d+)\.resample\.", r"down_blocks.\1.downsamplers.0.conv."),
    (r"^ups\.(\d+)\.resample\.1\.", r"up_blocks.\1.upsamplers.0.conv."),
    (r"^middle\.res1\.", "mid_block.resnets.0."),
    (r"^middle\.res2\.", "mid_block.resnets.1."),
    (r"^middle\.attention\.", "mid_block.attentions.0."),
    (r"^norm_out\.", "conv_norm_out."),
    (r"\.emb_proj\.", ".time_emb_proj."),
    (r"\.shortcut\.", ".conv_shortcut."),
    (r"(attentions\.\d+)\.norm\.", r"\1.group_norm."),
    (r"(attentions\.\d+)\.out\.", r"\1.to_out.0."),
]


def diffusers_key(gen_key: str) -> str:
    """gen's name for a DiffusionUNet tensor -> UNet2DModel's (`...qkv.*` names the q/k/v triple)."""
    for pattern, repl in _RENAMES:
        gen_key = re.sub(pattern, repl, gen_key)
    return gen_key


def gen_config(config: dict, source: str = "this UNet2DModel") -> dict:
    """UNet2DModel config -> DiffusionUNet keyword arguments; ValueError naming `source` and each option
    gen lacks."""
    config = dict(config)
    if config.get("attn_norm_num_groups") == config.get("norm_num_groups", 32):
        config["attn_norm_num_groups"] = None  # the same network as leaving it unset
    bad = {k: config[k] for k, ok in FIXED.items() if k in config and config[k] != ok}
    downs, ups = list(config.get("down_block_types", ())), list(config.get("up_block_types", ()))
    odd = [t for t in downs if t not in DOWN_TYPES] + [t for t in ups if t not in UP_TYPES]
    attention = [i for i, t in enumerate(downs) if t == "AttnDownBlock2D"]
    if not odd and sorted(len(ups) - 1 - j for j, t in enumerate(ups) if t == "AttnUpBlock2D") != attention:
        odd.append("attention levels of up_block_types that do not mirror down_block_types")
    if bad or odd:
        raise ValueError(
            f"{source} has options gen's ddpm U-Net does not reproduce: "
            f"{bad or ''}{' ' if bad and odd else ''}{odd or ''} (gen supports the DDPM layout: "
            f"{dict(FIXED)}, blocks {DOWN_TYPES} / {UP_TYPES})"
        )
    return dict(
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        channels=tuple(config["block_out_channels"]),
        dropout=config.get("dropout", 0.0),
        out_activation="none",
        layers_per_level=config.get("layers_per_block", 2),
        attention_levels=tuple(attention),
        attention_head_dim=config.get("attention_head_dim"),
        norm_groups=config.get("norm_num_groups", 32),
        norm_eps=config.get("norm_eps", 1e-5),
        time_flip_sin_to_cos=config.get("flip_sin_to_cos", True),
        time_freq_shift=config.get("freq_shift", 0),
        downsample_padding=config.get("downsample_padding", 1),
    )


def diffusers_config(net: DiffusionUNet, sample_size: int) -> dict:
    """gen DiffusionUNet -> UNet2DModel keyword arguments (the same network)."""
    if not isinstance(net, DiffusionUNet):
        raise ValueError(
            f"only diffusion U-Nets have a diffusers UNet2DModel counterpart; a {type(net).__name__} "
            "(transposed-conv decoders, batch norm) has none"
        )
    c = net.config
    if c.out_activation != "none":
        raise ValueError(f"out_activation={c.out_activation!r} has no UNet2DModel equivalent (it has none)")
    n, attention = len(c.channels), set(c.attention_levels)
    return dict(
        sample_size=sample_size,
        in_channels=c.in_channels,
        out_channels=c.out_channels,
        block_out_channels=tuple(c.channels),
        layers_per_block=c.layers_per_level,
        down_block_types=tuple(DOWN_TYPES[i in attention] for i in range(n)),
        up_block_types=tuple(UP_TYPES[i in attention] for i in reversed(range(n))),
        attention_head_dim=c.attention_head_dim,
        norm_num_groups=c.norm_groups,
        norm_eps=c.norm_eps,
        dropout=c.dropout,
        flip_sin_to_cos=c.time_flip_sin_to_cos,
        freq_shift=c.time_freq_shift,
        downsample_padding=c.downsample_padding,
        act_fn="silu",
        center_input_sample=False,
        time_embedding_type="positional",
        mid_block_scale_factor=1,
        resnet_time_scale_shift="default",
        add_attention=True,
    )


def from_unet2d(model, source: str = "this UNet2DModel") -> DiffusionUNet:
    """diffusers UNet2DModel -> gen DiffusionUNet with the same weights (float32, eval mode); errors
    name `source`."""
    net = DiffusionUNet(**gen_config(dict(model.config), source))
    source = model.state_dict()
    state = {}
    for key, target in net.state_dict().items():
        name = diffusers_key(key)
        if name.endswith(("qkv.weight", "qkv.bias")):
            base, param = name.rsplit(".qkv.", 1)
            value = torch.cat([source[f"{base}.to_{p}.{param}"] for p in "qkv"])
        else:
            value = source[name]
        if value.shape != target.shape:
            raise ValueError(
                f"UNet2DModel {name} has shape {tuple(value.shape)}, gen's {key} {tuple(target.shape)}"
            )
        state[key] = value.float()
    net.load_state_dict(state)
    return net.eval()


def to_unet2d(net: DiffusionUNet, sample_size: int):
    """gen DiffusionUNet -> diffusers UNet2DModel with the same weights."""
    from diffusers import UNet2DModel

    model = UNet2DModel(**diffusers_config(net, sample_size))
    state = {}
    for key, value in net.state_dict().items():
        name = diffusers_key(key)
        if name.endswith(("qkv.weight", "qkv.bias")):
            base, param = name.rsplit(".qkv.", 1)
            for p, part in zip("qkv", value.chunk(3)):
                state[f"{base}.to_{p}.{param}"] = part.clone()
        else:
            state[name] = value.clone()
    model.load_state_dict(state)
    return model.eval()


def find_unet2d_folder(source: str | Path) -> Path:
    """A local folder holding a UNet2DModel (config.json + weights, directly or in `unet/`), or a
    Hugging Face repo id already in the local hub cache (nothing is downloaded)."""
    path = Path(source)
    if not path.exists():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)):
            from huggingface_hub import snapshot_download
            from huggingface_hub.errors import LocalEntryNotFoundError

            try:
                path = Path(snapshot_download(str(source), local_files_only=True))
            except (LocalEntryNotFoundError, OSError, ValueError) as err:
                raise FileNotFoundError(
                    f"{source}: not a local folder, and not in the local Hugging Face cache "
                    f"(nothing is downloaded here: {type(err).__name__})"
                ) from None
        else:
            raise FileNotFoundError(f"diffusers U-Net not found: {source}")
    for folder in (path, path / "unet"):
        cfg = folder / "config.json"
        if cfg.is_file() and json.loads(cfg.read_text()).get("_class_name") == "UNet2DModel":
            return folder
    raise ValueError(
        f'{path}: no UNet2DModel here (expected config.json with "_class_name": "UNet2DModel", '
        "in the folder or in its unet/ subfolder)"
    )


def find_scheduler_config(unet_folder: Path) -> Optional[Path]:
    """The noise schedule shipped beside a UNet2DModel (pipeline layout or the flat hub layout)."""
    for candidate in (
        unet_folder.parent / "scheduler" / "scheduler_config.json",
        unet_folder / "scheduler_config.json",
        unet_folder / "scheduler" / "scheduler_config.json",
    ):
        if candidate.is_file():
            return candidate
    return None


def load_unet2d(source: str | Path):
    """(UNet2DModel, its folder) from a local folder or the local hub cache; ValueError if unreadable."""
    from diffusers import UNet2DModel

    folder = find_unet2d_folder(source)
    try:
        return UNet2DModel.from_pretrained(folder, local_files_only=True), folder
    except (OSError, ValueError, RuntimeError, EnvironmentError) as err:
        raise ValueError(f"{folder}: could not load the UNet2DModel: {str(err).splitlines()[0]}") from None
