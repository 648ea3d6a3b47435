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


@pytest.fixture(scope="module")
def golden_pipeline(guider, unet):
    """ColorFlowPipeline around the fixture's guider and LoRA'd UNet (VAE, text encoder and
    tokenizer are not needed: the golden cases give the latents and text embeddings)."""
    from diffusers import UniPCMultistepScheduler

    from chromaflow.models.colorflow.pipeline import ColorFlowPipeline, PipelineOptions
    from chromaflow.models.colorflow.tiny import SD15_SCHEDULER
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_config(_config("vae_config.json"))
    load_state_dict_checked(vae, load_file(FIXTURE / "vae.safetensors"), "vae.safetensors")
    scale = float(load_file(FIXTURE / "icp_io.safetensors")["c2.conditioning_scale"][0])
    options = PipelineOptions(steps=10, guidance_scale=7.5, conditioning_scale=scale)
    scheduler = UniPCMultistepScheduler.from_config(SD15_SCHEDULER)
    return ColorFlowPipeline(unet, guider, vae, None, None, scheduler, options=options)


@torch.no_grad()
def test_c2_cfg_through_the_pipeline(guider, golden_pipeline, icp_io):
    """The CFG case through ColorFlowPipeline's own guider call (once, repeated for both CFG
    rows), UNet call and CFG combination: catches a swapped CFG formula or a wrong scale."""
    io, pipe = icp_io, golden_pipeline
    scale = float(io["c2.conditioning_scale"][0])
    t = io["c2.timestep"][0]
    x, cond, text = io["c2.noisy_latent"], io["c2.cond_latent"], io["c2.encoder_hidden_states"]
    # the official code runs the guider on the CFG batch of 2
    _check_adds(guider(x, t, cond, scale), io, "c2")
    # the pipeline runs it on the page's row and repeats it for the uncond and cond rows
    assert pipe.uses_cfg and torch.equal(x[0], x[1]) and torch.equal(cond[0], cond[1])
    _check_adds(pipe.guider_adds(x[:1], t, cond[:1], repeat=2), io, "c2")
    assert_close(pipe.guided_unet(x[:1], t, cond[:1], text), io["c2.unet_out"], "c2.unet_out")
    assert_close(pipe.predict_noise(x[:1], t, cond[:1], text), io["c2.cfg_noise_pred"], "c2.cfg_noise_pred")


def test_condition_mask_and_channel_order_match_the_golden_layout(golden_pipeline, icp_io):
    """c1's condition: [VAE(refs) 0-3, m 4, VAE(query) 5-8], m = 0 on the generated centre
    (latent rows/cols 4..11 of 16), 1 on the references. The pipeline's latent mask from a
    canvas-size generate mask, and its channel assembly, rebuild it exactly."""
    from chromaflow.models.colorflow.pipeline import assemble_condition

    cond = icp_io["c1.cond_latent"]
    generate = torch.zeros(1, 1, 128, 128)
    generate[..., 32:96, 32:96] = 1.0  # the centre quarter of a 128x128 canvas
    mask = golden_pipeline.latent_mask(generate)
    torch.testing.assert_close(mask, cond[:, 4:5], atol=0, rtol=0)
    torch.testing.assert_close(assemble_condition(cond[:, :4], mask, cond[:, 5:]), cond, atol=0, rtol=0)


@torch.no_grad()
def test_one_scheduler_step_matches_the_closed_form(golden_pipeline, icp_io):
    """denoise_step on c2 (t = 999, the first of 10 UniPC steps): the golden CFG noise, then
    UniPC's first step, which is first order (= DDIM): x0 = (x - s_t e) / a_t,
    x_next = a_n x0 + s_n e, with a = sqrt(alphas_cumprod), s = sqrt(1 - alphas_cumprod) at
    t = 999 and the next timestep 899. Computed here in float64 from the schedule."""
    io, pipe = icp_io, golden_pipeline
    pipe.scheduler.set_timesteps(10)
    t, t_next = pipe.scheduler.timesteps[:2].tolist()
    assert (t, t_next) == (int(io["c2.timestep"][0]), 899)
    x, cond, text = io["c2.noisy_latent"][:1], io["c2.cond_latent"][:1], io["c2.encoder_hidden_states"]
    out = pipe.denoise_step(x, pipe.scheduler.timesteps[0], cond, text)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2  # SD's scaled_linear
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    a_t, a_n = alphas_cumprod[t].sqrt(), alphas_cumprod[t_next].sqrt()
    s_t, s_n = (1 - alphas_cumprod[t]).sqrt(), (1 - alphas_cumprod[t_next]).sqrt()
    e = io["c2.cfg_noise_pred"].double()
    x0 = (x.double() - s_t * e) / a_t
    expected = (a_n * x0 + s_n * e).float()
    assert_close(out, expected, "c2 first UniPC step")


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


@torch.no_grad()
def test_unet_add_sample_arguments_are_checked(unet, icp_io):
    io = icp_io
    down, mid, up = _adds(io, "c1")
    x, t, text = io["c1.noisy_latent"], io["c1.timestep"][0], io["c1.encoder_hidden_states"]
    with pytest.raises(ValueError, match="pass all of"):
        unet(x, t, text, down, None, None)
    with pytest.raises(ValueError, match="expected 12 down / 15 up add-samples, got 11 / 15"):
        unet(x, t, text, down[:-1], mid, up)
    with pytest.raises(ValueError, match="got 12 / 14"):
        unet(x, t, text, down, mid, up[1:])
    # the lists are read, not consumed (the official code pops from them)
    unet(x, t, text, down, mid, up)
    assert len(down) == 12 and len(up) == 15


def test_add_hooks_handle_every_output_form(unet):
    """Tensor, tuple (Transformer2DModel with return_dict=False) and Transformer2DModelOutput
    outputs each get the add; the first down block's pre-hook adds to hidden_states given
    by keyword or by position; without pending adds the hooks change nothing."""
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    from chromaflow.models.colorflow.unet import _add_to_output

    one, add = torch.ones(1, 2, 2, 2), torch.full((1, 2, 2, 2), 3.0)
    assert torch.equal(_add_to_output(one, add), one + add)
    out = _add_to_output((one, "rest"), add)
    assert torch.equal(out[0], one + add) and out[1] == "rest"
    assert torch.equal(_add_to_output(Transformer2DModelOutput(sample=one), add).sample, one + add)

    unet._install_add_hooks()
    assert unet._pending_adds is None and unet._first_down_pre_hook(None, (one,), {}) is None
    unet._pending_adds = ([add], None, [])
    try:
        args, kwargs = unet._first_down_pre_hook(None, (one, "temb"), {})
        assert torch.equal(args[0], one + add) and args[1] == "temb" and kwargs == {}
        args, kwargs = unet._first_down_pre_hook(None, (), {"hidden_states": one, "temb": "t"})
        assert torch.equal(kwargs["hidden_states"], one + add) and kwargs["temb"] == "t" and args == ()
    finally:
        unet._pending_adds = None


@torch.no_grad()
def test_guider_timestep_forms_and_scale(guider, icp_io):
    """A 0-d, 1-element or per-row timestep gives the same adds; the conditioning scale
    multiplies every add (0 turns the guider off)."""
    io = icp_io
    x, cond = io["c2.noisy_latent"], io["c2.cond_latent"]
    base = guider(x, torch.tensor(999), cond, 0.7)
    for t in (999, torch.tensor([999]), torch.tensor([999, 999])):
        down, mid, up = guider(x, t, cond, 0.7)
        assert_close(mid, base[1], f"mid add, t={t!r}")
        assert_close(down[3], base[0][3], f"down add 3, t={t!r}")
    down, mid, up = guider(x, 999, cond, 0.0)
    assert all(a.abs().max() == 0 for a in [*down, mid, *up])
    # a different timestep changes the adds (the time embedding is used)
    assert (guider(x, 500, cond, 0.7)[1] - base[1]).abs().max() > 1e-3
