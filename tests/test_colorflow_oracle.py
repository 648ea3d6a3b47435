"""An independent oracle for the diffusion loop: two UniPC steps assembled by hand from the
tiny components (VAE, text encoder, guider, UNet, scheduler schedule) the way the official
ColorFlow pipeline does it, compared with ColorFlowPipeline.colorize_canvases.

What the hand version does differently from the pipeline, on purpose: it runs the guider on
the whole CFG batch (the official way; the pipeline runs it once and repeats), builds the
latent mask by slicing (the canvas centre is latent-aligned) instead of interpolating, writes
the CFG formula and UniPC's first (first-order) step out in float64, and takes the second
step from a fresh diffusers scheduler. A swapped CFG formula, another condition channel
order, a flipped mask, a guider fed another timestep than the UNet, or a conditioning scale
not applied all change the latents by far more than the tolerance."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chromaflow.models.colorflow.pipeline import ColorFlowPipeline, PipelineOptions  # noqa: E402
from chromaflow.models.colorflow.tiny import write_tiny_release  # noqa: E402
from chromaflow.models.colorflow.weights import load_colorflow  # noqa: E402

SEED = 11
STEPS = 2
GUIDANCE = 5.0
COND_SCALE = 0.8
CANVAS = 128  # 2W x 2H canvas; the generated centre is rows/cols 32..96 = latent 4..12


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    return load_colorflow(*write_tiny_release(tmp_path_factory.mktemp("oracle")))


@pytest.fixture(scope="module")
def pipe(components):
    options = PipelineOptions(steps=STEPS, guidance_scale=GUIDANCE, conditioning_scale=COND_SCALE)
    return ColorFlowPipeline.from_components(components, options=options)


def _canvas():
    rng = np.random.default_rng(4)
    canvas = rng.integers(0, 256, (CANVAS, CANVAS, 3), dtype=np.uint8)
    generate = np.zeros((CANVAS, CANVAS), bool)
    generate[32:96, 32:96] = True
    return canvas, generate


def _posterior_sample(vae, image, eps):
    dist = vae.encode(image).latent_dist
    return (dist.mean + dist.std * eps) * vae.config.scaling_factor


def _embed(components, prompt):
    ids = components.tokenizer(prompt, padding="max_length", max_length=components.tokenizer.model_max_length,
                               truncation=True, return_tensors="pt").input_ids
    return components.text_encoder(ids)[0]


def _eps_by_hand(c, x, t, condition, text):
    """Official ColorFlow: guider and UNet on the CFG batch [uncond; cond], same x and t."""
    x2, cond2 = torch.cat([x, x]), torch.cat([condition, condition])
    down, mid, up = c.guider(x2, t, cond2, COND_SCALE)
    eps = c.unet(x2, t, text, down, mid, up).sample
    eps_uncond, eps_cond = eps.chunk(2)
    return eps_uncond + GUIDANCE * (eps_cond - eps_uncond)


def _alpha_sigma(alphas_cumprod, t):
    a = alphas_cumprod[int(t)].double()
    return a.sqrt(), (1 - a).sqrt()


@torch.no_grad()
def hand_loop(c):
    """Two UniPC steps and the decode, from the components. Returns (latents per step, image)."""
    from diffusers import UniPCMultistepScheduler

    canvas, generate = _canvas()
    image = torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 127.5 - 1
    refs_only = image.clone()
    refs_only[..., 32:96, 32:96] = -1.0  # centre black: references only
    query_only = torch.full_like(image, -1.0)
    query_only[..., 32:96, 32:96] = image[..., 32:96, 32:96]  # only the query
    g = torch.Generator().manual_seed(SEED)  # per page: refs noise, query noise, initial latent
    shape = (1, 4, CANVAS // 8, CANVAS // 8)
    eps_refs, eps_query, noise = (torch.randn(shape, generator=g) for _ in range(3))
    mask = torch.ones(1, 1, *shape[2:])
    mask[..., 4:12, 4:12] = 0.0  # 0 where generated, 1 on the references
    condition = torch.cat([_posterior_sample(c.vae, refs_only, eps_refs), mask,
                           _posterior_sample(c.vae, query_only, eps_query)], 1)
    text = torch.cat([_embed(c, ""), _embed(c, "manga")])

    scheduler = UniPCMultistepScheduler.from_config(c.scheduler.config)
    scheduler.set_timesteps(STEPS)
    t0, t1 = scheduler.timesteps
    x = noise * scheduler.init_noise_sigma
    trace = []
    # step 1, written out: UniPC's first step is first order, i.e. DDIM from t0 to t1
    e0 = _eps_by_hand(c, x, t0, condition, text)
    a0, s0 = _alpha_sigma(scheduler.alphas_cumprod, t0)
    a1, s1 = _alpha_sigma(scheduler.alphas_cumprod, t1)
    x0_pred = (x.double() - s0 * e0.double()) / a0
    x_t1 = (a1 * x0_pred + s1 * e0.double()).float()
    trace.append(x_t1)
    # step 2 (second order, with UniPC's corrector): the library scheduler, fed our noise
    scheduler.step(e0, t0, x)
    e1 = _eps_by_hand(c, x_t1, t1, condition, text)
    trace.append(scheduler.step(e1, t1, x_t1).prev_sample)
    decoded = c.vae.decode(trace[-1] / c.vae.config.scaling_factor).sample
    out = ((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return trace, out


@pytest.fixture(scope="module")
def by_hand(components, pipe):
    return hand_loop(components)


def test_two_steps_match_the_hand_assembled_loop(pipe, by_hand):
    trace, out_by_hand = by_hand
    canvas, generate = _canvas()
    seen = []
    out = pipe.colorize_canvases([canvas], [generate], [SEED], on_step=lambda i, t, x: seen.append(x.clone()))[0]
    assert len(seen) == STEPS
    for i, (ours, theirs) in enumerate(zip(seen, trace)):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4, msg=lambda m: f"step {i}: {m}")
    assert np.abs(out.astype(int) - out_by_hand.astype(int)).max() <= 1
    # the oracle is sharp: the step-1 latents move well beyond the tolerance between steps
    assert (trace[1] - trace[0]).abs().max() > 0.05


@torch.no_grad()
def test_condition_is_refs_then_mask_then_query(pipe, components):
    """prepare_condition's channel order and mask polarity, against VAE samples by hand."""
    canvas, generate = _canvas()
    image = torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 127.5 - 1
    g = torch.Generator().manual_seed(SEED)
    cond = pipe.prepare_condition(image, torch.from_numpy(generate)[None, None].float(), [g])
    g = torch.Generator().manual_seed(SEED)
    eps_refs, eps_query = (torch.randn(1, 4, 16, 16, generator=g) for _ in range(2))
    refs_only, query_only = image.clone(), torch.full_like(image, -1.0)
    refs_only[..., 32:96, 32:96] = -1.0
    query_only[..., 32:96, 32:96] = image[..., 32:96, 32:96]
    vae = components.vae
    torch.testing.assert_close(cond[:, :4], _posterior_sample(vae, refs_only, eps_refs), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cond[:, 5:], _posterior_sample(vae, query_only, eps_query), atol=1e-4, rtol=1e-4)
    assert cond[0, 4, 4:12, 4:12].max() == 0 and cond[0, 4, :4].min() == 1 and cond[0, 4, :, 12:].min() == 1


@torch.no_grad()
def test_guider_and_unet_get_each_steps_timestep(pipe):
    """Recorded from forward pre-hooks on the real models over a 3-step run: at every step the
    guider and the UNet see the same timestep, the scheduler's timestep of that step."""
    seen = {"guider": [], "unet": []}

    def recorder(name):
        def hook(module, args, kwargs):
            seen[name].append(int(args[1] if len(args) > 1 else kwargs["timestep"]))

        return hook

    handles = [pipe.guider.register_forward_pre_hook(recorder("guider"), with_kwargs=True),
               pipe.unet.register_forward_pre_hook(recorder("unet"), with_kwargs=True)]
    saved = pipe.options.steps
    pipe.options.steps = 3
    try:
        canvas, generate = _canvas()
        pipe.colorize_canvases([canvas], [generate], [0])
        expected = [int(t) for t in pipe.scheduler.timesteps]
    finally:
        pipe.options.steps = saved
        for h in handles:
            h.remove()
    assert len(set(expected)) == 3
    assert seen["guider"] == expected and seen["unet"] == expected


@torch.no_grad()
def test_guidance_one_is_one_unet_pass_without_cfg(pipe, components):
    """guidance_scale <= 1 turns CFG off: only the prompt's rows, and the step is the plain
    guided prediction (checked against the first-order step by hand)."""
    canvas, generate = _canvas()
    saved = pipe.options.guidance_scale, pipe.options.steps
    pipe.options.guidance_scale, pipe.options.steps = 1.0, 1
    try:
        assert not pipe.uses_cfg and pipe.text_condition(2).shape[0] == 2
        seen = []
        pipe.colorize_canvases([canvas], [generate], [SEED], on_step=lambda i, t, x: seen.append((t, x.clone())))
    finally:
        pipe.options.guidance_scale, pipe.options.steps = saved
    assert pipe.uses_cfg and pipe.text_condition(2).shape[0] == 4
    t, latents = seen[0]
    image = torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 127.5 - 1
    g = torch.Generator().manual_seed(SEED)
    condition = pipe.prepare_condition(image, torch.from_numpy(generate)[None, None].float(), [g])
    noise = torch.randn(1, 4, 16, 16, generator=g)
    eps = components.unet(noise, t, _embed(components, "manga"), *components.guider(noise, t, condition, COND_SCALE)).sample
    a, s = _alpha_sigma(pipe.scheduler.alphas_cumprod, t)  # one step straight to x0
    torch.testing.assert_close(latents, ((noise.double() - s * eps.double()) / a).float(), atol=1e-4, rtol=1e-4)


def test_canvas_sides_must_be_latent_multiples(pipe):
    canvas, generate = _canvas()
    with pytest.raises(ValueError, match="canvas 120x128: sides must be multiples of 64"):
        pipe.colorize_canvases([canvas[:, :120]], [generate[:, :120]], [0])


@torch.no_grad()
def test_vae_tiling_switches_at_the_configured_side(pipe):
    canvas, generate = _canvas()
    saved = pipe.options.vae_tiling_min_side, pipe.options.steps
    try:
        pipe.options.steps = 1
        pipe.options.vae_tiling_min_side = CANVAS - 1
        pipe.colorize_canvases([canvas], [generate], [0])
        assert pipe.vae.use_tiling
        pipe.options.vae_tiling_min_side = CANVAS
        pipe.colorize_canvases([canvas], [generate], [0])
        assert not pipe.vae.use_tiling
    finally:
        pipe.options.vae_tiling_min_side, pipe.options.steps = saved


def test_memory_format_compile_and_placement_options(components):
    """channels_last only when asked; no torch.compile unless asked; models frozen in eval
    mode; a guider config with another channel count is refused."""
    plain = ColorFlowPipeline.from_components(components)
    weight = plain.unet.conv_in.weight
    assert weight.is_contiguous() and not isinstance(plain.unet, torch._dynamo.eval_frame.OptimizedModule)
    assert not plain.unet.training and not any(p.requires_grad for p in plain.guider.parameters())
    assert plain.text_encoder.device.type == "cpu" and plain.vae_scale == 8 and plain.unet_scale == 8
    fast = ColorFlowPipeline.from_components(components, channels_last=True)
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    components.unet.to(memory_format=torch.contiguous_format)  # shared objects: undo for the other tests
    components.guider.to(memory_format=torch.contiguous_format)
    components.vae.to(memory_format=torch.contiguous_format)
    saved = components.guider.config.conditioning_channels
    components.guider.register_to_config(conditioning_channels=7)
    try:
        with pytest.raises(ValueError, match="conditioning_channels must be 5 or 9, got 7"):
            ColorFlowPipeline.from_components(components)
    finally:
        components.guider.register_to_config(conditioning_channels=saved)
