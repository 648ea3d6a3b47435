"""Training building blocks against hand-computed oracles and the inference code:
shifted timesteps, screentone, patch-wise crops, patch shuffle, the shard format, the
condition (vs ColorFlowPipeline.prepare_condition), gradient checkpointing (vs none),
guider-from-UNet, and build-training-set's determinism, resume, exclusion and skips."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chromaflow.conf import load_config  # noqa: E402
from chromaflow.training.augment import crop_output_size, patch_crop_box, patch_shuffle  # noqa: E402
from chromaflow.training.colorizer import shifted_timesteps  # noqa: E402
from chromaflow.training.screentone import render_screentone, screenstyle_variant  # noqa: E402
from training_data import CORRUPT_PAGE, make_colored_archive  # noqa: E402

TINY = "conf/tiny.yaml"


def test_shifted_timesteps_match_eq5_by_hand():
    u = torch.tensor([0.25, 0.5, 1.0])
    # t' = e^1.5 / (e^1.5 + T/t - 1) * T, T = 1000: u=.25 -> 599.02, u=.5 -> 817.57, u=1 -> 1000
    assert shifted_timesteps(u, 1000, 1.5).tolist() == [599, 817, 999]
    assert shifted_timesteps(u, 1000, 0.0).tolist() == [249, 499, 999]  # mu = 0: no shift
    draws = shifted_timesteps(torch.rand(20000, generator=torch.Generator().manual_seed(0)), 1000, 1.5)
    median = math.exp(1.5) / (math.exp(1.5) + 1) * 1000  # the shift maps the median t=T/2 here
    assert abs(float(draws.float().median()) - median) < 10


def test_screentone_preserves_tone_and_extremes():
    flat = np.full((96, 96), 128, np.uint8)
    tone = render_screentone(flat, period=6)
    assert set(np.unique(tone)) <= {0, 255}
    assert abs((tone == 0).mean() - (1 - 128 / 255)) < 0.01
    assert (render_screentone(np.full((32, 32), 255, np.uint8)) == 255).all()
    assert (render_screentone(np.zeros((32, 32), np.uint8)) == 0).all()
    assert (screenstyle_variant(flat, tone, 0.0) == flat).all() and (screenstyle_variant(flat, tone, 1.0) == tone).all()
    half = screenstyle_variant(flat, tone, 0.5)
    assert set(np.unique(half)) == {64, 192}  # (128 + 0) / 2 and (128 + 255) / 2, rounded


def test_patch_crop_always_holds_the_query():
    rng = np.random.default_rng(0)
    canvas, query = (1024, 1600), (256, 400, 768, 1200)
    for _ in range(200):
        context = rng.uniform(0, 1)
        x0, y0, x1, y1 = patch_crop_box(canvas, query, context, rng)
        assert 0 <= x0 <= 256 and 768 <= x1 <= 1024 and 0 <= y0 <= 400 and 1200 <= y1 <= 1600
    assert patch_crop_box(canvas, query, 0.0, rng) == query
    assert patch_crop_box(canvas, query, 1.0, rng) == (0, 0, 1024, 1600)
    assert crop_output_size(768, 1200, 0.5) == (384, 576) and crop_output_size(10, 10, 1.0) == (64, 64)


def test_patch_shuffle_permutes_cells():
    image = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4), np.ones((3, 3), np.uint8))  # 4x4 cells of 3x3
    out = patch_shuffle(image, 4, np.random.default_rng(1))
    cells = sorted(int(out[r * 3, c * 3]) for r in range(4) for c in range(4))
    assert cells == list(range(16)) and not np.array_equal(out, image)
    assert all(len(np.unique(out[r * 3:r * 3 + 3, c * 3:c * 3 + 3])) == 1 for r in range(4) for c in range(4))
    assert np.array_equal(patch_shuffle(image, 1, np.random.default_rng(1)), image)


def test_shard_round_trip(tmp_path):
    from chromaflow.storage.shards import write_shard
    from chromaflow.training.dataset import ShardReader, TrainPage, encode_page

    rng = np.random.default_rng(0)
    patches = [[rng.integers(0, 256, (8 + q, 9, 3), dtype=np.uint8) for _ in range(2)] for q in range(4)]
    page = TrainPage("c0000p00001", rng.integers(0, 256, (20, 16, 3), dtype=np.uint8),
                     rng.integers(0, 256, (20, 16), dtype=np.uint8), rng.integers(0, 256, (20, 16), dtype=np.uint8),
                     rng.integers(0, 256, (20, 16), dtype=np.uint8), patches, {"screen_weight": 0.3})
    write_shard(tmp_path / "s.tar", [encode_page(page)])
    back = ShardReader([tmp_path / "s.tar"]).page(0)
    assert back.key == page.key and back.meta["screen_weight"] == 0.3 and back.shuffled is None
    for a, b in [(back.color, page.color), (back.gray, page.gray), (back.lines, page.lines), (back.screen, page.screen)]:
        np.testing.assert_array_equal(a, b)
    for q in range(4):
        for r in range(2):
            np.testing.assert_array_equal(back.patches[q][r], patches[q][r])


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from chromaflow.models.colorflow.tiny import write_tiny_release

    return write_tiny_release(tmp_path_factory.mktemp("tiny_base"))


def _colorizer_module(sd15, checkpointing: bool):
    from chromaflow.training.base import attach_lora, guider_from_unet, load_base, prompt_embedding
    from chromaflow.training.colorizer import ColorizerModule

    torch.manual_seed(0)
    base = load_base(sd15)
    guider = guider_from_unet(base.unet, 9)
    attach_lora(base.unet, None, 4)
    with torch.no_grad():  # non-zero projections and LoRA B, so every path carries gradient
        for name, p in [*guider.named_parameters(), *base.unet.named_parameters()]:
            if "brushnet_" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    if checkpointing:
        base.unet.enable_gradient_checkpointing()
        guider._supports_gradient_checkpointing = True
        guider.enable_gradient_checkpointing()
    return ColorizerModule(base, guider, prompt_embedding(base, "manga"), 1.5).train()


def _batch(seed=0, size=64):
    rng = np.random.default_rng(seed)
    color = torch.from_numpy(rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32))
    bw = torch.from_numpy(rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32))
    generate = torch.zeros(2, 1, size, size)
    generate[:, :, size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    return {"color": color, "bw": bw, "generate": generate}


def test_condition_matches_the_inference_pipeline(tiny_base):
    from chromaflow.models.colorflow.pipeline import ColorFlowPipeline
    from chromaflow.models.colorflow.weights import load_colorflow
    from chromaflow.training.colorizer import condition_from_latents, posterior_sample

    pipe = ColorFlowPipeline.from_components(load_colorflow(*tiny_base))
    batch = _batch(1)
    canvas, generate = batch["bw"][:1], batch["generate"][:1]
    expected = pipe.prepare_condition(canvas, generate, [torch.Generator().manual_seed(5)])
    keep, black = 1 - generate, torch.full_like(canvas, -1.0)
    g = torch.Generator().manual_seed(5)  # the pipeline draws the refs row, then the query row
    eps = torch.cat([torch.randn((1, 4, 8, 8), generator=g), torch.randn((1, 4, 8, 8), generator=g)])
    with torch.no_grad():
        latents = posterior_sample(pipe.vae, torch.cat([torch.where(keep > 0.5, canvas, black),
                                                        torch.where(keep > 0.5, black, canvas)]), eps)
        ours = condition_from_latents(latents[:1], latents[1:], keep, 9)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_base):
    grads = []
    for checkpointing in (False, True):
        module = _colorizer_module(tiny_base[1], checkpointing)
        loss = module(**_batch(2), generator=torch.Generator().manual_seed(3))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 100
    assert any("lora_A" in n for n in grads[0]) and any(n.startswith("guider.brushnet_up") for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-4, msg=name)


def test_guider_from_unet_starts_as_a_no_op(tiny_base):
    """Fresh guider (zero projections) + fresh LoRA (B = 0): the stock UNet's prediction."""
    from diffusers import UNet2DConditionModel

    from chromaflow.training.base import attach_lora, guider_from_unet, load_base

    base = load_base(tiny_base[1])
    stock = UNet2DConditionModel.from_pretrained(str(tiny_base[1] / "unet")).eval()
    guider = guider_from_unet(base.unet, 9)
    torch.testing.assert_close(guider.conv_in_condition.weight[:, 4:8], stock.conv_in.weight)
    assert guider.conv_in_condition.weight[:, 8:].abs().max() == 0
    attach_lora(base.unet, None, 4)
    x, text = torch.randn(1, 4, 8, 8), torch.randn(1, 16, 32)
    with torch.no_grad():
        adds = guider(x, 500, torch.randn(1, 9, 8, 8))
        ours = base.unet.eval()(x, 500, text, *adds).sample
        reference = stock(x, 500, text).sample
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_build_is_deterministic_resumable_and_skips_corrupt_pages(tmp_path):
    from chromaflow.training.build_set import build_training_set, read_plan, shard_paths
    from chromaflow.training.dataset import ShardReader, open_training_set

    src = make_colored_archive(tmp_path / "archive", chapters=3, pages=3)
    config = load_config(TINY, ["train.shard_size=2"])
    with pytest.warns(UserWarning, match=f"chapter1/{CORRUPT_PAGE}: not a readable image"):
        info = build_training_set(src, tmp_path / "a", config)
    assert any(CORRUPT_PAGE in s for s in info["skipped"])
    assert info["splits"]["train"]["pages"] == 6 and info["splits"]["validation"]["pages"] == 3
    assert len(info["splits"]["train"]["chapters"]) == 2  # split by chapter
    again = build_training_set(src, tmp_path / "b", config)
    assert again["splits"] == info["splits"]
    for split in ("train", "validation"):
        for shard in range(len(info["splits"][split]["shards"])):
            a, b = shard_paths(tmp_path / "a", split, shard)[0], shard_paths(tmp_path / "b", split, shard)[0]
            assert a.read_bytes() == b.read_bytes()  # same seed, byte-identical shards
    # resumable by shard: only the shard whose done marker is gone is rebuilt
    tar, stats = shard_paths(tmp_path / "a", "train", 1)
    stats.unlink()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "train").glob("*.tar")}
    build_training_set(src, tmp_path / "a", config)
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "train").glob("*.tar")}
    assert [p.name for p in before if before[p] != after[p]] == [tar.name]
    # references come from other pages of the same split, 3 per quadrant
    dataset, plan = open_training_set(tmp_path / "a"), read_plan(tmp_path / "a")
    reader = ShardReader(dataset.shards("train"))
    for i in range(len(reader)):
        page = reader.page(i)
        refs = [r for quadrant in page.meta["references"] for r in quadrant]
        assert len(refs) == 12 and all(r["page"] != page.key for r in refs)
        assert all(plan["pages"][r["page"]]["split"] == "train" for r in refs)
        assert 0 <= page.meta["screen_weight"] <= 1 and page.color.shape[2] == 3


def test_episode_neighbours_are_excluded():
    from chromaflow.training.build_set import excluded_names

    pages = {f"c0000p{i:05d}": {"key": f"c0000p{i:05d}", "chapter": "c0000", "kind": "episode", "index": i}
             for i in range(20)}
    pages["c0001p00003"] = {"key": "c0001p00003", "chapter": "c0001", "kind": "episode", "index": 3}
    names = excluded_names({"pages": pages}, pages["c0000p00005"], 2)
    assert names == {f"c0000/c0000p{i:05d}.png" for i in range(3, 8)}
    chapter_page = dict(pages["c0000p00005"], kind="chapter")
    assert excluded_names({"pages": pages}, chapter_page, 2) == {"c0000/c0000p00005.png"}


def test_in_process_resume_with_ema_and_accumulation(tmp_path):
    """The loop without Ray (as the benchmark runs it): EMA + gradient accumulation, a
    checkpoint at step 2, the step-4 checkpoint lost, a rerun redoes steps 3-4 identically."""
    import shutil

    from chromaflow.models.colorflow.weights import read_safetensors
    from chromaflow.training.builders import resolve_sd15
    from chromaflow.training.checkpoint import RAW_WEIGHTS, step_dir
    from chromaflow.training.loop import WorkerContext, train_worker
    from chromaflow.training.report import read_metrics, truncate_metrics

    from chromaflow.training.build_set import build_training_set

    src = make_colored_archive(tmp_path / "archive", chapters=1, pages=3)
    config = load_config(TINY, ["train.steps=4", "train.checkpoint_every=2", "train.validate_every=0",
                                "train.ema_decay=0.5", "train.grad_accum=2", "train.batch_size=1"])
    with pytest.warns(UserWarning):
        build_training_set(src, tmp_path / "data", config)
    run = tmp_path / "run"
    resolve_sd15(config, run)
    train_worker("colorizer", str(tmp_path / "data"), str(run), config.model_dump(mode="json"), WorkerContext())
    first = [r["loss"] for r in read_metrics(run)]
    ema = read_safetensors(step_dir(run, 4) / "GraySD" / "unet_lora.safetensors")
    raw = read_safetensors(step_dir(run, 4) / RAW_WEIGHTS)
    key = next(k for k in ema if "lora_B" in k)
    assert not torch.equal(ema[key], raw[f"unet_lora.safetensors/{key}"])  # checkpoints hold the EMA weights
    shutil.rmtree(step_dir(run, 4))
    truncate_metrics(run, 3)  # as if killed after logging step 3
    train_worker("colorizer", str(tmp_path / "data"), str(run), config.model_dump(mode="json"), WorkerContext())
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in read_metrics(run)], first, rtol=1e-5)
    again = read_safetensors(step_dir(run, 4) / "GraySD" / "unet_lora.safetensors")
    torch.testing.assert_close(again[key], ema[key])
