"""Loading a Segment Anything (SAM) checkpoint from a local file; nothing is downloaded.

Accepted: the official `sam_vit_{b,l,h}_*.pth` state dicts, any SAM state dict saved with
`torch.save(model.state_dict())` (read with `weights_only=True`, onto the CPU, so a
checkpoint saved from CUDA tensors loads on a CPU host), or the same in `.safetensors`.

The architecture is read from the weights' shapes (image encoder width, depth, heads,
window, input size; prompt and mask decoder sizes), so a checkpoint of another type
than `instances.sam_arch` asks for is refused with one line naming the file, what it is
and what was expected. `vit_b` / `vit_l` / `vit_h` are built through segment_anything's
own `sam_model_registry`; `auto` builds whatever the weights describe (also the small
SAMs tests build). The mask decoder's attention heads do not show in the weights; they
are SAM's 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

ARCHS = {"vit_b": (768, 12), "vit_l": (1024, 24), "vit_h": (1280, 32)}  # image encoder width, depth
DECODER_HEADS = 8


class SamCheckpointError(ValueError):
    """A SAM checkpoint that cannot be used; str() is one line naming the file."""


@dataclass(frozen=True)
class SamDims:
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    img_size: int
    window_size: int
    global_attn_indexes: tuple[int, ...]
    mlp_ratio: float
    prompt_dim: int
    mask_in_chans: int
    decoder_depth: int
    decoder_mlp_dim: int
    iou_head_depth: int
    iou_head_hidden_dim: int
    num_multimask_outputs: int

    @property
    def arch(self) -> str | None:
        return next((name for name, dims in ARCHS.items() if dims == (self.embed_dim, self.depth)), None)

    def describe(self) -> str:
        return self.arch or f"SAM-like model ({self.embed_dim}-wide, {self.depth}-block image encoder)"


def read_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise SamCheckpointError(f"{path}: SAM checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip, safetensors header errors: all one line
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise SamCheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or "image_encoder.patch_embed.proj.weight" not in state:
        raise SamCheckpointError(f"{path}: not a Segment Anything checkpoint (no image_encoder.* weights); "
                                 f"expected a SAM state dict (vit_b, vit_l or vit_h)")
    return state


def _count(state: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".", 1)[0] for k in state if k.startswith(prefix)})


def read_dims(state: dict) -> SamDims:
    """The architecture a SAM state dict describes (KeyError when a part is missing)."""
    proj = state["image_encoder.patch_embed.proj.weight"]
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[2])
    grid = int(state["image_encoder.pos_embed"].shape[1])
    depth = _count(state, "image_encoder.blocks.")
    rel = [int(state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) for i in range(depth)]
    global_blocks = tuple(i for i, r in enumerate(rel) if r == 2 * grid - 1)
    windowed = [r for r in rel if r != 2 * grid - 1]
    return SamDims(
        embed_dim=embed_dim, depth=depth,
        num_heads=embed_dim // int(state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]),
        patch_size=patch, img_size=grid * patch, window_size=(windowed[0] + 1) // 2 if windowed else 0,
        global_attn_indexes=global_blocks,
        mlp_ratio=state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
        prompt_dim=int(state["image_encoder.neck.0.weight"].shape[0]),
        mask_in_chans=int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
        decoder_depth=_count(state, "mask_decoder.transformer.layers."),
        decoder_mlp_dim=int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
        iou_head_depth=_count(state, "mask_decoder.iou_prediction_head.layers."),
        iou_head_hidden_dim=int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
        num_multimask_outputs=int(state["mask_decoder.mask_tokens.weight"].shape[0]) - 1)


def build_from_dims(dims: SamDims):
    """A SAM with the given architecture (segment_anything's modules, random weights)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = dims.img_size // dims.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=dims.img_size, patch_size=dims.patch_size, embed_dim=dims.embed_dim, depth=dims.depth,
            num_heads=dims.num_heads, mlp_ratio=dims.mlp_ratio, out_chans=dims.prompt_dim, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=dims.window_size,
            global_attn_indexes=dims.global_attn_indexes),
        prompt_encoder=PromptEncoder(embed_dim=dims.prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(dims.img_size, dims.img_size),
                                     mask_in_chans=dims.mask_in_chans),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=dims.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=dims.decoder_depth, embedding_dim=dims.prompt_dim,
                                          mlp_dim=dims.decoder_mlp_dim, num_heads=DECODER_HEADS),
            transformer_dim=dims.prompt_dim, iou_head_depth=dims.iou_head_depth,
            iou_head_hidden_dim=dims.iou_head_hidden_dim),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def load_sam(path: str | Path, arch: str = "auto", device: str = "cpu"):
    """The SAM model of a local checkpoint, in eval mode on `device`."""
    from segment_anything import sam_model_registry

    path = Path(path)
    state = read_state_dict(path)
    try:
        dims = read_dims(state)
    except (KeyError, IndexError, ZeroDivisionError) as exc:
        raise SamCheckpointError(f"{path}: incomplete Segment Anything checkpoint (missing {exc}); "
                                 f"expected a SAM state dict (vit_b, vit_l or vit_h)") from None
    if arch != "auto" and dims.arch != arch:
        width, depth = ARCHS[arch]
        raise SamCheckpointError(f"{path}: is a {dims.describe()} checkpoint, expected SAM {arch} "
                                 f"({width}-wide, {depth}-block image encoder); set instances.sam_arch to match")
    model = sam_model_registry[dims.arch](checkpoint=None) if dims.arch and dims.img_size == 1024 \
        else build_from_dims(dims)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise SamCheckpointError(f"{path}: weights do not fit a SAM {dims.describe()} ({first})") from None
    return model.to(device).eval()
