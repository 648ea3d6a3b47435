"""The `sam` instance backend: a tiny Segment Anything built here (small image encoder),
saved, loaded back through the checkpoint path and run by the automatic mask generator;
its masks merged into characters; wrong checkpoints refused with one line."""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import pytest

from chromaflow.conf import load_config
from chromaflow.models.instances.base import Instance


def tiny_sam(seed: int = 0):
    """A SAM with a 32-wide, 2-block image encoder on 64 x 64 inputs (random weights)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    encoder = ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4,
                              out_chans=16, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                              use_rel_pos=True, window_size=2, global_attn_indexes=[1])
    prompt = PromptEncoder(embed_dim=16, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=8)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=16,
                                                                                 mlp_dim=32, num_heads=8),
                          transformer_dim=16, iou_head_depth=2, iou_head_hidden_dim=16)
    return Sam(encoder, prompt, decoder).eval()


@pytest.fixture(scope="module")
def tiny_sam_file(tmp_path_factory):
    import torch

    model = tiny_sam()
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(model.state_dict(), path)
    return model, path


def sam_config(path, **extra):
    sets = ["instances.backend=sam", f"instances.sam_checkpoint={path}", "instances.sam_points_per_side=4",
            "instances.sam_pred_iou_thresh=0", "instances.sam_stability_score_thresh=0", "instances.min_area=0",
            "instances.device=cpu"] + [f"instances.{k}={v}" for k, v in extra.items()]
    return load_config(overrides=sets)


def test_tiny_sam_loads_from_its_checkpoint_and_batched_generation_equals_the_library(tiny_sam_file):
    from segment_anything import SamAutomaticMaskGenerator

    from chromaflow.models.instances import build_segmenter

    model, path = tiny_sam_file
    segmenter = build_segmenter(sam_config(path))
    loaded = segmenter.generator.predictor.model
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.state_dict().values(),
                                                                    loaded.state_dict().values()))
    rng = np.random.default_rng(1)
    images = [(rng.random((80, 100, 3)) * 255).astype(np.uint8) for _ in range(2)]
    reference = SamAutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    expected = [reference.generate(image) for image in images]
    segmenter.generator.predictor.prime(images)  # one batched encoder pass for both
    got = [segmenter.generator.generate(image) for image in images]
    assert all(len(e) >= 1 for e in expected)
    for exp, out in zip(expected, got):
        assert len(exp) == len(out)
        assert all(np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(exp, out))
    # Through the segmenter: every instance is made of generated masks, fitted to the page.
    pages = [(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), img) for img in images]
    instances = segmenter.segment_batch(pages)
    assert len(instances) == 2 and all(isinstance(i, Instance) for page in instances for i in page)


def test_sam_masks_merge_into_characters():
    from chromaflow.models.instances.merge import merge_masks

    def rect(x0, y0, x1, y1):
        m = np.zeros((100, 200), bool)
        m[y0:y1, x0:x1] = True
        return {"segmentation": m, "area": int(m.sum()), "predicted_iou": 0.9}

    masks = [rect(0, 0, 200, 100),  # the paper: dropped
             rect(10, 10, 60, 90),  # a character
             rect(20, 20, 40, 40),  # its eye: joins it
             rect(10, 50, 60, 95),  # its legs, mostly inside it: join it
             rect(62, 10, 110, 90),  # a second character touching the first
             rect(150, 10, 190, 50)]  # a third one, apart
    instances = merge_masks(masks, (100, 200), min_area=0.01)
    boxes = [i.box for i in instances]
    assert boxes == [(10, 10, 60, 95), (62, 10, 110, 90), (150, 10, 190, 50)]
    assert instances[0].group == instances[1].group != instances[2].group


def test_wrong_sam_checkpoints_are_one_line_errors_naming_the_file(tiny_sam_file, tmp_path):
    import torch

    from chromaflow.models.instances import build_segmenter
    from chromaflow.models.instances.sam_checkpoint import SamCheckpointError

    _, path = tiny_sam_file
    with pytest.raises(SamCheckpointError) as wrong_arch:
        build_segmenter(sam_config(path, sam_arch="vit_b"))
    message = str(wrong_arch.value)
    assert "\n" not in message and str(path) in message and "expected SAM vit_b" in message
    not_sam = tmp_path / "clip.pth"
    torch.save({"visual.conv1.weight": torch.zeros(2, 3, 4, 4)}, not_sam)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    for bad, says in ((not_sam, "not a Segment Anything checkpoint"), (garbage, "not a readable checkpoint"),
                      (tmp_path / "missing.pth", "not found")):
        with pytest.raises(SamCheckpointError) as err:
            build_segmenter(sam_config(bad))
        assert "\n" not in str(err.value) and str(bad) in str(err.value) and says in str(err.value)


