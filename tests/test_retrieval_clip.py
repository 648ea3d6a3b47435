"""CLIP embedders from local weights: a tiny open_clip model (checkpoint file and
local-dir folder) and a tiny HF CLIPVisionModelWithProjection (`image_encoder/` layout),
all created and saved here. Nothing is downloaded."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from chromaflow.conf import load_config
from chromaflow.retrieval.clip import ClipEmbedder, ClipLoadError
from chromaflow.retrieval.build import build_store
from chromaflow.retrieval.search import ReferenceIndex
from chromaflow.retrieval.store_format import EmbedderMismatchError

from test_retrieval import FAST, make_pool, query

TINY_OPEN_CLIP = {"embed_dim": 32,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def open_clip_checkpoint(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("openclip")
    arch = root / "tiny-clip-test.json"
    arch.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(arch)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test", pretrained=None)
    weights = root / "tiny.pt"
    torch.save(model.state_dict(), weights)
    folder = root / "local"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return arch, weights, folder, model


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("hfclip")
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    CLIPVisionModelWithProjection(config).save_pretrained(root / "image_encoder")
    return root


def clip_config(checkpoint, arch="ViT-B-32"):
    return load_config(overrides=FAST + ["retrieval.backend=clip", f"retrieval.clip_checkpoint={checkpoint}",
                                         f"retrieval.clip_arch={arch}", "retrieval.clip_batch_size=4"])


def test_open_clip_checkpoint_file_matches_the_model(open_clip_checkpoint):
    arch, weights, _, model = open_clip_checkpoint
    embedder = ClipEmbedder.from_config(clip_config(weights, arch).retrieval)
    assert embedder.dim == 32 and embedder.domain == "rgb"
    patches = [np.random.default_rng(i).integers(0, 255, (40 + i, 50, 3), dtype=np.uint8) for i in range(6)]
    vectors = embedder.embed(patches)  # 2 batches of 4 + remainder
    assert vectors.shape == (6, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # Same numbers as the in-memory model on the same preprocessed input.
    x = torch.from_numpy(np.stack([embedder._prepare(p) for p in patches[:1]]))
    with torch.no_grad():
        ref = model.encode_image(x)
    ref = (ref / ref.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(vectors[:1], ref, atol=1e-5)


def test_open_clip_local_dir_and_hf_image_encoder(open_clip_checkpoint, hf_checkpoint):
    _, weights, folder, _ = open_clip_checkpoint
    local = ClipEmbedder.from_config(clip_config(folder).retrieval)
    file_based = ClipEmbedder.from_config(clip_config(weights, open_clip_checkpoint[0]).retrieval)
    patch = [np.full((30, 30, 3), 128, np.uint8)]
    np.testing.assert_allclose(local.embed(patch), file_based.embed(patch), atol=1e-5)
    hf = ClipEmbedder.from_config(clip_config(hf_checkpoint).retrieval)  # finds image_encoder/
    assert hf.dim == 16 and hf.embed(patch).shape == (1, 16)
    assert hf.signature != local.signature


def test_clip_errors_are_one_line(tmp_path, open_clip_checkpoint):
    with pytest.raises(ClipLoadError, match="clip_checkpoint"):
        ClipEmbedder.from_config(load_config(overrides=["retrieval.backend=clip"]).retrieval)
    with pytest.raises(ClipLoadError, match="does not exist"):
        ClipEmbedder.from_config(clip_config(tmp_path / "nope.pt").retrieval)
    with pytest.raises(ClipLoadError, match="unknown open_clip architecture"):
        ClipEmbedder.from_config(clip_config(open_clip_checkpoint[1], "NoSuchArch").retrieval)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipLoadError, match="neither"):
        ClipEmbedder.from_config(clip_config(tmp_path / "empty").retrieval)


def test_store_with_clip_refuses_descriptor_queries(tmp_path, hf_checkpoint):
    refs = make_pool(tmp_path / "refs", shapes=("ball", "box"))
    cfg = clip_config(hf_checkpoint)
    store = build_store(refs, tmp_path / "index", cfg)
    assert store.info["embedder"]["name"] == "clip" and store.embeddings.shape[1] == 16
    lines, page = query("ball")
    result = store.search(lines, page, 2)
    assert len(result["references"]) == 2 and len(result["quadrants"]) == 4
    assert ReferenceIndex.open(tmp_path / "index").info["embedder"]["name"] == "clip"
    with pytest.raises(EmbedderMismatchError, match="clip"):
        ReferenceIndex.open(tmp_path / "index", load_config(overrides=FAST))


def test_hf_clip_embeddings_equal_the_saved_models_forward(hf_checkpoint, tmp_path):
    """ClipEmbedder on the HF `image_encoder/` folder vs that saved model's own forward,
    loaded here with transformers and fed pixels preprocessed by hand: patches already at the
    model's 32x32 input (so no resize), scaled to [0, 1], normalised with the folder's
    preprocessor_config.json mean/std (not CLIP's defaults), gray patches repeated to RGB.
    Then L2-normalised image_embeds."""
    from transformers import CLIPVisionModelWithProjection

    folder = tmp_path / "image_encoder"
    shutil.copytree(hf_checkpoint / "image_encoder", folder)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    embedder = ClipEmbedder.from_config(clip_config(folder).retrieval)
    rng = np.random.default_rng(7)
    patches = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    patches.append(rng.integers(0, 256, (32, 32), dtype=np.uint8))
    vectors = embedder.embed(patches)  # batches of 4 + 2

    model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True).eval()
    rgb = np.stack([np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p for p in patches]).astype(np.float32)
    pixels = (rgb / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
    with torch.no_grad():
        expected = model(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2)).image_embeds.numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    # and the embeddings tell the patches apart (a constant output would also be "normalised")
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-2
