"""The `diffusion` backend end to end on tiny random-weight models written in the release +
SD1.5 folder layouts (a tokenizer built offline): page-size output, determinism under a
seed, batching independence, condition layout, and clear errors for bad weight folders."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chromaflow.config import load_config  # noqa: E402
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


def test_gsrp_tiles_big_pages(colorizer):
    from chromaflow.models.colorflow.pipeline import _blend_weights, _tile_spans

    # starts on latent pixels (multiples of 8), overlapping by >= 16, the last to the end
    assert _tile_spans(100, 64, 16, 8) == [(0, 64), (32, 100)] and _tile_spans(50, 64, 16, 8) == [(0, 50)]
    assert _tile_spans(200, 64, 16, 8) == [(0, 64), (48, 112), (96, 160), (136, 200)]
    assert _blend_weights(10, 12, 4).min() > 0
    pipe = colorizer.pipeline
    rng = np.random.default_rng(3)
    color = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (100, 90), dtype=np.uint8)
    saved = pipe.options.gsrp_tile, pipe.options.gsrp_tile_overlap
    pipe.options.gsrp_tile, pipe.options.gsrp_tile_overlap = 64, 16
    try:
        tiled = pipe.super_resolve(color, gray, seed=0)
        again = pipe.super_resolve(color, gray, seed=0)
    finally:
        pipe.options.gsrp_tile, pipe.options.gsrp_tile_overlap = saved
    assert tiled.shape == (100, 90, 3) and tiled.dtype == np.uint8
    np.testing.assert_array_equal(tiled, again)


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
