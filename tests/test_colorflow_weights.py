"""Loading the release + SD1.5 folders through diffusers' from_pretrained: sharded and
fp16-variant checkpoints, the strict one-line key report, LoRA fused with diffusers."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file, save_file  # noqa: E402

from chromaflow.models.colorflow.tiny import write_tiny_release  # noqa: E402
from chromaflow.models.colorflow.weights import WeightsError, load_colorflow  # noqa: E402


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("tiny_weights"))


@pytest.fixture(scope="module")
def reference(release):
    return load_colorflow(*release, merge_lora=False)


def _copy(release, tmp_path):
    colorflow, sd15 = release
    shutil.copytree(colorflow, tmp_path / "colorflow")
    shutil.copytree(sd15, tmp_path / "sd15")
    return tmp_path / "colorflow", tmp_path / "sd15"


def _same_state(a, b, dtype=None):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        expected = sa[key] if dtype is None else sa[key].to(dtype).to(sa[key].dtype)
        assert torch.equal(sb[key], expected), key


def test_sharded_unet_and_fp16_variant_vae_load(release, reference, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    colorflow, sd15 = _copy(release, tmp_path)
    unet = UNet2DConditionModel.from_pretrained(str(release[1] / "unet"))
    shutil.rmtree(sd15 / "unet")
    unet.save_pretrained(str(sd15 / "unet"), max_shard_size="300KB")
    shards = sorted(p.name for p in (sd15 / "unet").glob("*.safetensors"))
    assert len(shards) > 2 and (sd15 / "unet" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    vae = AutoencoderKL.from_pretrained(str(release[1] / "vae"))
    shutil.rmtree(sd15 / "vae")
    vae.to(torch.float16).save_pretrained(str(sd15 / "vae"), variant="fp16")
    assert [p.name for p in (sd15 / "vae").glob("*.safetensors")] == ["diffusion_pytorch_model.fp16.safetensors"]

    loaded = load_colorflow(colorflow, sd15, merge_lora=False)
    _same_state(reference.unet, loaded.unet)
    _same_state(reference.vae, loaded.vae, dtype=torch.float16)
    assert next(loaded.vae.parameters()).dtype == torch.float32  # the pipeline casts later
    sources = [r.source for r in loaded.reports]
    assert any(s.endswith("unet/diffusion_pytorch_model.safetensors.index.json") for s in sources)
    assert any(s.endswith("vae/diffusion_pytorch_model.fp16.safetensors") for s in sources)
    assert all(r.ok and r.matched for r in loaded.reports)


def test_shape_mismatch_is_one_line_naming_the_file(release, tmp_path):
    colorflow, sd15 = _copy(release, tmp_path)
    config = sd15 / "unet" / "config.json"
    data = json.loads(config.read_text())
    data["cross_attention_dim"] = 16  # the file's attn2 projections are 32 wide
    config.write_text(json.dumps(data))
    with pytest.raises(WeightsError) as err:
        load_colorflow(colorflow, sd15)
    message = str(err.value)
    assert "\n" not in message and "unet/diffusion_pytorch_model.safetensors" in message
    assert "attn2.to_k.weight" in message and "expected shape" in message


def test_missing_and_unexpected_keys_are_counted(release, tmp_path):
    colorflow, sd15 = _copy(release, tmp_path)
    path = sd15 / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    state.pop("decoder.conv_in.bias")
    state["decoder.extra.weight"] = torch.zeros(2)
    save_file(state, path)
    with pytest.raises(WeightsError) as err:
        load_colorflow(colorflow, sd15)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "1 missing, 1 unexpected" in message and "decoder.conv_in.bias" in message and "decoder.extra.weight" in message


def test_guider_folder_without_weights_names_the_file(release, tmp_path):
    colorflow, sd15 = _copy(release, tmp_path)
    (colorflow / "GraySD" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"GraySD/diffusion_pytorch_model.safetensors: weights file not found"):
        load_colorflow(colorflow, sd15)


@torch.no_grad()
def test_fused_lora_gives_the_adapter_output(release, reference):
    """merge_lora (diffusers fuse_lora + unload_lora): plain Linears, no peft state left,
    same UNet output as the LoRA adapter applied on the fly."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = load_colorflow(*release, merge_lora=True).unet
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    assert not getattr(merged, "peft_config", None) and not any(".lora_" in k for k in merged.state_dict())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=generator)
    text = torch.randn(1, 5, 32, generator=generator)
    expected = reference.unet(x, 500, text).sample
    torch.testing.assert_close(merged(x, 500, text).sample, expected, atol=1e-5, rtol=1e-5)
    reference.unet.disable_adapters()
    try:
        without = reference.unet(x, 500, text).sample
    finally:
        reference.unet.enable_adapters()
    assert (without - expected).abs().max() > 1e-2  # the LoRA matters
