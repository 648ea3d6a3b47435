"""The `diffusion` backend end to end on tiny random-weight models written in the release +
SD1.5 folder layouts (a tokenizer built offline): page-size output, determinism under a
seed, batching independence, condition layout, and clear errors for bad weight folders."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chromaflow.conf import load_config  # noqa: E402
from chromaflow.models.colorflow.backend import DiffusionColorizer, page_seed, pick_resolution  # noqa: E402
from chromaflow.models.colorflow.tiny import write_tiny_release  # noqa: E402
from chromaflow.models.colorflow.weights import WeightsError, load_colorflow  # noqa: E402
from chromaflow.models.colorizers import ColorizeRequest, Reference, build_colorizer  # noqa: E402
from chromaflow.models.colorflow.canvas import build_canvas  # noqa: E402


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("tiny_release"))


def _config(colorflow, sd15, *extra):
    return load_config(
        overrides=[
            "colorize.backend=diffusion",
            f"colorize.diffusion.colorflow_path={colorflow}",
            f"colorize.diffusion.sd15_path={sd15}",
            "colorize.diffusion.resolution=64x64",
            "colorize.diffusion.steps=2",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def colorizer(release):
    return build_colorizer(_config(*release))


def _request(key, seed, height=70, width=50):
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, (height, width), dtype=np.uint8)
    page = np.repeat(gray[..., None], 3, axis=2)
    ref = Reference("alice", "alice/a.png", rng.integers(0, 256, (40, 30, 3), dtype=np.uint8),
                    rng.integers(0, 256, (40, 30), dtype=np.uint8), score=0.9)
    return ColorizeRequest(key=key, page=page, lines=gray, kind="gray", references=[ref])


def test_end_to_end_page_size_and_deterministic(colorizer):
    assert isinstance(colorizer, DiffusionColorizer)
    assert colorizer.pipeline.multires is not None  # GSRP runs
    request = _request("p000001", 1)
    first = colorizer.colorize(request)
    assert first.shape == (70, 50, 3) and first.dtype == np.uint8
    assert first.std() > 0  # not a constant image
    again = colorizer.colorize(request)
    np.testing.assert_array_equal(first, again)
    # several pages per forward: a page's result does not depend on its batch mates (up to
    # float rounding: batched CPU kernels may sum in another order, so allow 1 grey level)
    other = _request("p000002", 2, height=64, width=48)
    batch = colorizer.colorize_batch([request, other])
    diff = np.abs(batch[0].astype(int) - first.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02
    assert batch[1].shape == (64, 48, 3)
    assert not np.array_equal(batch[1][:48, :48], first[:48, :48])


def test_condition_channels_and_mask(colorizer):
    pipe = colorizer.pipeline
    query = np.full((64, 64, 3), 128, np.uint8)
    canvas = build_canvas(query, [[np.zeros((10, 10, 3), np.uint8)]] * 4, size=(64, 64))
    assert canvas.image.shape == (128, 128, 3) and canvas.query_box == (32, 32, 96, 96)
    images = torch.from_numpy(canvas.image[None]).permute(0, 3, 1, 2).float() / 127.5 - 1
    generate = torch.from_numpy((canvas.mask == 0)[None, None].astype(np.float32))
    with torch.no_grad():
        cond = pipe.prepare_condition(images, generate, [torch.Generator().manual_seed(0)])
    assert cond.shape == (1, 9, 16, 16)
    mask = cond[0, 4]
    assert mask[4:12, 4:12].max() == 0 and mask[0].min() == 1 and mask[:, 0].min() == 1
    pipe.conditioning_channels = 5
    try:
        with torch.no_grad():
            cond5 = pipe.prepare_condition(images, generate, [torch.Generator().manual_seed(0)])
    finally:
        pipe.conditioning_channels = 9
    assert cond5.shape == (1, 5, 16, 16)
    torch.testing.assert_close(cond5[:, 4], cond[:, 4])


def test_resolution_and_seed_helpers():
    assert pick_resolution(1000, 1560, None) == (512, 800)
    assert pick_resolution(1560, 1000, None) == (800, 512)
    assert pick_resolution(900, 1000, None) == (640, 640)
    assert page_seed(0, "p1") == page_seed(0, "p1") != page_seed(1, "p1")


def test_missing_paths_give_clear_error():
    with pytest.raises(ValueError, match="colorize.diffusion.colorflow_path"):
        DiffusionColorizer.from_config(load_config(overrides=["colorize.backend=diffusion"]))


def _copy_release(release, tmp_path):
    colorflow, sd15 = release
    shutil.copytree(colorflow, tmp_path / "colorflow")
    shutil.copytree(sd15, tmp_path / "sd15")
    return tmp_path / "colorflow", tmp_path / "sd15"


def test_wrong_file_in_weights_folder_is_named(release, tmp_path):
    colorflow, sd15 = _copy_release(release, tmp_path)
    graysd = colorflow / "GraySD"
    # the MultiResNet weights where the guider's should be
    shutil.copy(graysd / "MultiResNetModel.safetensors", graysd / "diffusion_pytorch_model.safetensors")
    with pytest.raises(WeightsError) as err:
        load_colorflow(colorflow, sd15)
    message = str(err.value)
    assert "GraySD/diffusion_pytorch_model.safetensors" in message and "\n" not in message
    assert "0 matched" in message and "missing: " in message and "two_layer_resnets" in message


def test_lora_file_with_other_names_and_pickled_only_folder(release, tmp_path):
    colorflow, sd15 = _copy_release(release, tmp_path)
    graysd = colorflow / "GraySD"
    shutil.copy(sd15 / "unet" / "diffusion_pytorch_model.safetensors", graysd / "unet_lora.safetensors")
    with pytest.raises(WeightsError, match=r"unet_lora.safetensors: no lora_A tensors"):
        load_colorflow(colorflow, sd15)
    (graysd / "unet_lora.safetensors").unlink()
    (graysd / "unet_lora.bin").write_bytes(b"not read")
    with pytest.raises(WeightsError, match=r"unet_lora.bin: pickled checkpoint; convert"):
        load_colorflow(colorflow, sd15)
    shutil.rmtree(sd15 / "vae")
    with pytest.raises(WeightsError, match=r"sd15/vae: SD1.5 vae folder not found"):
        load_colorflow(colorflow, sd15)


def test_gsrp_tile_spans():
    from chromaflow.models.colorflow.pipeline import _blend_weights, _tile_spans

    # starts on latent pixels (multiples of 8), evenly spaced, overlapping by >= 16, the last to the end
    assert _tile_spans(100, 64, 16, 8) == [(0, 64), (32, 100)] and _tile_spans(50, 64, 16, 8) == [(0, 50)]
    assert _tile_spans(200, 64, 16, 8) == [(0, 64), (48, 112), (88, 152), (136, 200)]
    assert _tile_spans(70, 64, 16, 8) == [(0, 70)]  # less than one latent pixel left: one tile
    # linear ramps over the overlap (never 0, so every pixel has weight), flat in the middle
    ramp = _blend_weights(6, 1, 2)[:, 0, 0]
    np.testing.assert_allclose(ramp, [1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(_blend_weights(3, 4, 2)[..., 0], np.outer([0.5, 1, 0.5], [1 / 3, 2 / 3, 2 / 3, 1 / 3]),
                               rtol=1e-6)  # short sides: the ramp takes at most half
    assert _blend_weights(4, 4, 0).min() == 1.0


def _local_vae(vae):
    """The VAE with its two global operations made local: GroupNorm (statistics over the
    whole input) becomes its per-channel affine, the mid-block self-attention is skipped.
    What is left is convolutions, so tiling can only differ from the whole near the seams."""
    from torch import nn

    class Affine(nn.Module):
        def __init__(self, norm):
            super().__init__()
            self.weight, self.bias = norm.weight, norm.bias

        def forward(self, x):
            return x * self.weight[None, :, None, None] + self.bias[None, :, None, None]

    class Skip(nn.Module):
        def forward(self, hidden_states, *args, **kwargs):
            return hidden_states

    for module in list(vae.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(module, name, Affine(child))
    for block in (vae.encoder.mid_block, vae.decoder.mid_block):
        block.attentions = nn.ModuleList([Skip() for _ in block.attentions])
    return vae


def test_gsrp_tiling_matches_the_whole_page_away_from_seams(release):
    """A 200x168 page in 96-px tiles (overlap 32) vs in one piece: same posterior noise per
    location, tiles placed and blended right. With the VAE made local (above) the two agree
    to 1 grey level 8 px away from any seam (measured: max 1, mean 0.011) and to 2 levels on
    the seams; noise drawn per tile instead of sliced from the page's would differ by ~0.9 on
    average, a tile placed 8 px off by tens of levels. (With the real GroupNorm every tile
    normalises with its own statistics, which tiny random weights make visible everywhere.)"""
    from chromaflow.models.colorflow.pipeline import ColorFlowPipeline, PipelineOptions, _tile_spans

    components = load_colorflow(*release)
    _local_vae(components.vae)
    pipe = ColorFlowPipeline.from_components(components, options=PipelineOptions(gsrp_tile=4096))
    rng = np.random.default_rng(3)
    height, width = 200, 168
    color = rng.integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (height, width), dtype=np.uint8)
    whole = pipe.super_resolve(color, gray, seed=0).astype(int)
    pipe.options.gsrp_tile, pipe.options.gsrp_tile_overlap = 96, 32
    tiled = pipe.super_resolve(color, gray, seed=0)
    assert tiled.shape == (height, width, 3) and tiled.dtype == np.uint8
    seams = np.zeros((height, width), bool)
    for axis, length in ((0, height), (1, width)):
        spans = _tile_spans(length, 96, 32, 8)
        assert len(spans) == 3
        for edge in {e for span in spans for e in span} - {0, length}:
            band = slice(max(0, edge - 8), edge + 8)
            seams[(band, slice(None)) if axis == 0 else (slice(None), band)] = True
    diff = np.abs(tiled.astype(int) - whole)
    assert diff[~seams].max() <= 1 and diff[~seams].mean() < 0.05 and (~seams).mean() > 0.4
    assert diff.max() <= 3 and diff.mean() < 0.1
    # the comparison is sharp: another seed moves the page far more than tiling does
    pipe.options.gsrp_tile = 4096
    assert np.abs(pipe.super_resolve(color, gray, seed=1).astype(int) - whole).mean() > 0.5


def test_low_precision_pipelines_track_float32(release, colorizer):
    from dataclasses import replace

    from chromaflow.models.colorflow.pipeline import ColorFlowPipeline

    rng = np.random.default_rng(5)
    canvas = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    generate = np.zeros((128, 128), bool)
    generate[32:96, 32:96] = True
    one_step = replace(colorizer.pipeline.options, steps=1)
    reference = ColorFlowPipeline.from_components(load_colorflow(*release), options=one_step)
    reference = reference.colorize_canvases([canvas], [generate], [7])[0].astype(int)
    for dtype in (torch.bfloat16, torch.float16):
        pipe = ColorFlowPipeline.from_components(load_colorflow(*release), dtype=dtype, options=one_step)
        # SD's VAE is flagged force_upcast: float16 keeps it (and GSRP) in float32
        assert pipe.vae_dtype == (torch.float32 if dtype == torch.float16 else dtype)
        assert next(pipe.unet.parameters()).dtype == dtype
        out = pipe.colorize_canvases([canvas], [generate], [7])[0].astype(int)
        assert np.abs(out - reference).mean() < 3, dtype
