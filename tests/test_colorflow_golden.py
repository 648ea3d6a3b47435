"""Golden compatibility: tiny random weights in ColorFlow's release key layout, and the
tensors the official implementation computed from them (tests/fixtures/colorflow_tiny,
see its README). Every tensor must be reproduced within atol 1e-4 + rtol 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from chromaflow.models.colorflow.gsrp import (  # noqa: E402
    MultiHiddenResNetModel,
    decode_with_hidden,
    encode_with_hidden,
    guided_super_resolution,
)
from chromaflow.models.colorflow.guider import ColorGuider  # noqa: E402
from chromaflow.models.colorflow.lora import add_colorflow_lora, load_lora_weights, lora_rank, merge_lora  # noqa: E402
from chromaflow.models.colorflow.unet import ColorFlowUNet2DConditionModel  # noqa: E402
from chromaflow.models.colorflow.weights import WeightsError, load_state_dict_checked  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "colorflow_tiny"
ATOL = RTOL = 1e-4


def assert_close(actual, expected, name):
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


def _config(name):
    return json.loads((FIXTURE / name).read_text())


def build_unet(with_lora=True):
    unet = ColorFlowUNet2DConditionModel.from_config(_config("unet_config.json")).eval()
    load_state_dict_checked(unet, load_file(FIXTURE / "unet.safetensors"), "unet.safetensors")
    if with_lora:
        lora = load_file(FIXTURE / "unet_lora.safetensors")
        add_colorflow_lora(unet, lora_rank(lora))
        load_lora_weights(unet, lora, "unet_lora.safetensors")
    return unet


@pytest.fixture(scope="module")
def icp_io():
    return load_file(FIXTURE / "icp_io.safetensors")


@pytest.fixture(scope="module")
def guider():
    model = ColorGuider.from_config(_config("guider_config.json")).eval()
    report = load_state_dict_checked(model, load_file(FIXTURE / "guider.safetensors"), "guider.safetensors")
    assert len(report.matched) == 626
    return model


@pytest.fixture(scope="module")
def unet():
    return build_unet()


def _adds(io, case):
    down = [io[f"{case}.down_add.{i:02d}"] for i in range(12)]
    up = [io[f"{case}.up_add.{i:02d}"] for i in range(15)]
    return down, io[f"{case}.mid_add"], up


def _check_adds(actual, io, case):
    down, mid, up = actual
    exp_down, exp_mid, exp_up = _adds(io, case)
    assert len(down) == 12 and len(up) == 15
    for i, (a, e) in enumerate(zip(down, exp_down)):
        assert_close(a, e, f"{case}.down_add.{i:02d}")
    assert_close(mid, exp_mid, f"{case}.mid_add")
    for i, (a, e) in enumerate(zip(up, exp_up)):
        assert_close(a, e, f"{case}.up_add.{i:02d}")


@torch.no_grad()
def test_c1_guider_adds_and_unet_output(guider, unet, icp_io):
    io = icp_io
    t = io["c1.timestep"][0]
    adds = guider(io["c1.noisy_latent"], t, io["c1.cond_latent"], 1.0)
    _check_adds(adds, io, "c1")
    out = unet(io["c1.noisy_latent"], t, io["c1.encoder_hidden_states"], *adds).sample
    assert_close(out, io["c1.unet_out"], "c1.unet_out")
    # the golden adds fed directly give the same output
    out = unet(io["c1.noisy_latent"], t, io["c1.encoder_hidden_states"], *_adds(io, "c1")).sample
    assert_close(out, io["c1.unet_out"], "c1.unet_out (golden adds)")
    # structural variants the fixture also records
    plain = unet(io["c1.noisy_latent"], t, io["c1.encoder_hidden_states"]).sample
    assert_close(plain, io["c1.unet_out_noadd"], "c1.unet_out_noadd")
    unet.disable_adapters()
    try:
        no_lora = unet(io["c1.noisy_latent"], t, io["c1.encoder_hidden_states"], *adds).sample
    finally:
        unet.enable_adapters()
    assert_close(no_lora, io["c1.unet_out_nolora"], "c1.unet_out_nolora")


@torch.no_grad()
def test_c2_cfg_guider_once_matches_batched_reference(guider, unet, icp_io):
    io = icp_io
    scale = float(io["c2.conditioning_scale"][0])
    t = io["c2.timestep"][0]
    x, cond = io["c2.noisy_latent"], io["c2.cond_latent"]
    # the official code runs the guider on the CFG batch of 2
    _check_adds(guider(x, t, cond, scale), io, "c2")
    # we run it once on one row (the guider ignores the text) and repeat its outputs
    down, mid, up = guider(x[:1], t, cond[:1], scale)
    twice = lambda a: a.expand(2, *a.shape[1:])  # noqa: E731
    out = unet(x, t, io["c2.encoder_hidden_states"], [twice(a) for a in down], twice(mid), [twice(a) for a in up]).sample
    assert_close(out, io["c2.unet_out"], "c2.unet_out")
    uncond, cond_pred = out.chunk(2)
    assert_close(uncond + 7.5 * (cond_pred - uncond), io["c2.cfg_noise_pred"], "c2.cfg_noise_pred")


@torch.no_grad()
def test_merged_lora_matches(icp_io, guider):
    io = icp_io
    unet = build_unet()
    assert merge_lora(unet) == 160
    t = io["c1.timestep"][0]
    out = unet(io["c1.noisy_latent"], t, io["c1.encoder_hidden_states"], *_adds(io, "c1")).sample
    assert_close(out, io["c1.unet_out"], "c1.unet_out (merged LoRA)")


def test_lora_key_spellings_accepted_and_mismatch_refused():
    lora = load_file(FIXTURE / "unet_lora.safetensors")
    peft_style = {"unet." + k.replace(".default.", "."): v for k, v in lora.items()}
    unet = build_unet(with_lora=False)
    add_colorflow_lora(unet, lora_rank(lora))
    report = load_lora_weights(unet, peft_style, "peft-style")
    assert len(report.matched) == 320 and report.ok
    # a whole `unet.state_dict()` after add_adapter (base_layer names + LoRA), as strict=False takes it
    whole = {**unet.state_dict(), **lora}
    report = load_lora_weights(unet, whole, "whole-unet")
    assert report.ok and len(report.matched) == len(whole) > 320

    missing_one = dict(lora)
    missing_one.pop(next(iter(missing_one)))
    with pytest.raises(WeightsError, match=r"missing-one: 319 matched, 1 missing"):
        load_lora_weights(unet, missing_one, "missing-one")
    renamed = {k.replace("to_q", "to_query"): v for k, v in lora.items()}
    with pytest.raises(WeightsError, match=r"unexpected: .*to_query"):
        load_lora_weights(unet, renamed, "renamed")


@torch.no_grad()
def test_gsrp_hidden_lists_and_decoded_output():
    from diffusers import AutoencoderKL

    io = load_file(FIXTURE / "gsrp_io.safetensors")
    vae = AutoencoderKL.from_config(_config("vae_config.json")).eval()
    load_state_dict_checked(vae, load_file(FIXTURE / "vae.safetensors"), "vae.safetensors")
    cfg = _config("multires_config.json")
    assert cfg["channels_list"] == MultiHiddenResNetModel.channels_for_vae(tuple(vae.config.block_out_channels))
    multires = MultiHiddenResNetModel(cfg["channels_list"], cfg["num_tensors"]).eval()
    report = load_state_dict_checked(multires, load_file(FIXTURE / "multires.safetensors"), "multires.safetensors")
    assert len(report.matched) == 258

    hidden_color, mean, logvar = encode_with_hidden(vae, io["color_image"])
    hidden_bw, bw_mean, _ = encode_with_hidden(vae, io["bw_image"])
    assert_close(mean, io["color_posterior_mean"], "color_posterior_mean")
    assert_close(logvar, io["color_posterior_logvar"], "color_posterior_logvar")
    assert_close(bw_mean, io["bw_posterior_mean"], "bw_posterior_mean")
    fused = multires(hidden_color, hidden_bw)
    for i in range(5):
        assert_close(hidden_color[i], io[f"hidden_color.{i}"], f"hidden_color.{i}")
        assert_close(hidden_bw[i], io[f"hidden_bw.{i}"], f"hidden_bw.{i}")
        assert_close(fused[i], io[f"hidden_multires.{i}"], f"hidden_multires.{i}")
    assert_close(mean + torch.exp(0.5 * logvar) * io["eps"], io["z"], "z")
    assert_close(decode_with_hidden(vae, io["z"], fused), io["decoded"], "decoded")
    assert_close(vae.decode(io["z"]).sample, io["decoded_no_hidden"], "decoded_no_hidden")
    out = guided_super_resolution(vae, multires, io["color_image"], io["bw_image"], eps=io["eps"])
    assert_close(out, io["decoded_clamped"], "decoded_clamped")
