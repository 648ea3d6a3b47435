"""Screentone detection and descreening on pages printed here with known screens."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from chromaflow.models.descreen import descreen, screened_regions, white_balanced
from chromaflow.models.screen_peaks import detect_screen_peaks
from chromaflow.models.page_styles import COLOR, GRAY, LINE, TONE, classify_page
from chromaflow.models.synth_screens import Screen, scan_degrade, tone_page
from synthetic import PALETTES, draw_character

GRAY_LEVEL = 150  # the tone patch's gray: 41% coverage


def patch_page(screen: Screen, stroke: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A 400 x 400 page: a gray square printed with `screen`, a black stroke across it.
    Returns (page RGB, mask of the square away from the stroke)."""
    color = np.full((400, 400, 3), 255, np.uint8)
    color[80:320, 80:320] = GRAY_LEVEL
    if stroke:
        cv2.line(color, (40, 200), (360, 210), (0, 0, 0), 5)
    page, _ = tone_page(color, np.random.default_rng(1), [screen])
    inside = np.zeros((400, 400), bool)
    inside[100:300, 100:300] = True
    inside[185:225] = False
    return page, inside


def gray_of(page: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(white_balanced(page), cv2.COLOR_RGB2GRAY)


def angle_diff(a: float, b: float, period: float) -> float:
    d = (a - b) % period
    return min(d, period - d)


@pytest.mark.parametrize("kind,period,angle", [("dots", 6.0, 30.0), ("dots", 9.0, 0.0), ("lines", 5.0, 60.0)])
def test_screen_period_and_angle_are_found(kind, period, angle):
    page, _ = patch_page(Screen(kind, period, angle))
    peaks = detect_screen_peaks(gray_of(page))
    assert peaks
    # The strongest peak is a fundamental (or, for dots, the same lattice 90 degrees off).
    best = peaks[0]
    assert abs(best.period - period) < 0.35 * period / 6, (best, period)
    assert angle_diff(best.angle, angle, 90.0 if kind == "dots" else 180.0) < 4.0, (best, angle)


@pytest.mark.parametrize("kind", ["dots", "lines", "noise"])
def test_descreened_tone_is_flat_and_the_stroke_stays(kind):
    page, inside = patch_page(Screen(kind, 7.0, 45.0))
    raw = gray_of(page).astype(np.float32)
    flat = descreen(raw).gray
    assert raw[inside].std() > 60  # the screen: black and white pixels
    assert flat[inside].std() < 12, flat[inside].std()
    assert abs(flat[inside].mean() - GRAY_LEVEL) < 20
    stroke = flat[200:210, 60:340]
    assert np.median(stroke.min(axis=0)) < 60  # the stroke crossing the tone is still black
    assert flat[20:60, 20:380].mean() > 245  # paper stays paper


def test_line_art_has_no_screen():
    page = draw_character(PALETTES["alice"], colored=False)
    gray = gray_of(page)
    assert detect_screen_peaks(gray) == []
    result = descreen(gray)
    assert result.texture_share < 0.005
    assert np.abs(result.gray - gray).max() < 1.0  # nothing to do: the page is unchanged


def test_page_styles():
    line = draw_character(PALETTES["alice"], colored=False)
    color = draw_character(PALETTES["alice"])
    gray = cv2.cvtColor(cv2.cvtColor(color, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    toned, _ = tone_page(color, np.random.default_rng(3), [Screen("dots", 6.0, 45.0)])
    assert classify_page(line) == LINE
    assert classify_page(color) == COLOR
    assert classify_page(gray) == GRAY
    assert classify_page(toned) == TONE
    # A scan: yellowed paper, grain, JPEG, a slight turn: still tone, not color.
    scanned, _ = scan_degrade(toned, np.random.default_rng(4))
    assert classify_page(scanned) == TONE
    yellowed = np.clip(line.astype(np.float32) * np.array([1.0, 0.96, 0.85]), 0, 255).astype(np.uint8)
    assert classify_page(yellowed) == LINE


def test_a_mostly_screened_yellowed_scan_is_tone_and_its_paper_white():
    """A close-up page: a screened face over 88 % of it, paper only around a corner, yellowed
    (blue x 0.82) and saved as JPEG. JPEG's chroma subsampling mixes the screen's gaps with
    its black dots: the brightest pixels are gaps, less yellow than the paper. The paper is
    read from block means: it comes out white (each channel >= 247, hand-checked: the
    corner's mean is within the grain of the paper's level), and the page is tone, not a
    color page to keep."""
    color = np.full((512, 512, 3), 255, np.uint8)
    cv2.circle(color, (300, 300), 300, (200, 200, 200), -1)
    toned, _ = tone_page(color, np.random.default_rng(5), [Screen("dots", 5.0, 45.0)])
    yellowed = np.clip(toned.astype(np.float32) * np.array([1.0, 0.98, 0.82]), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(yellowed, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 70])
    page = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    corner = white_balanced(page)[4:40, 4:40].reshape(-1, 3).mean(axis=0)
    assert corner.min() >= 247, corner
    assert classify_page(page) == TONE


def test_white_balance_by_hand():
    """Paper (200, 220, 240) with one block-sized square (150, 0, 250), under 1 % of the
    page's 8 x 8 blocks, so the paper is read exactly: every channel scaled by 255 / its
    paper, rounded: R 150 -> 191.25 -> 191, G 0 -> 0, B 250 -> 265.6 -> 255; an all-dark
    page (20 everywhere) keeps its levels up to a paper of 32: 20 -> 159.4 -> 159."""
    page = np.empty((256, 256, 3), np.uint8)
    page[:] = (200, 220, 240)
    page[16:24, 16:24] = (150, 0, 250)
    out = white_balanced(page)
    assert (out[0, 0] == 255).all()
    assert out[20, 20].tolist() == [191, 0, 255]
    assert (white_balanced(np.full((64, 64, 3), 20, np.uint8)) == 159).all()


def test_white_balance_reads_blocks_on_pages_four_blocks_wide():
    """A 32 x 32 page (4 blocks of 8) is read by block means: its 2 x 2 bright dots
    (250, a screen's gaps) on 200 paper average out, the paper is ~202 and stays white;
    a 24 x 24 page is read by pixels: its dots are the paper, the 200 paper is balanced to
    200 * 255 / 250 = 204."""
    def dotted(side):
        page = np.full((side, side, 3), 200, np.uint8)
        page[::8, ::8] = page[1::8, ::8] = page[::8, 1::8] = page[1::8, 1::8] = 250
        return page
    assert white_balanced(dotted(32))[4, 4, 0] >= 250
    assert white_balanced(dotted(24))[4, 4, 0] == 204


def test_zoomed_line_art_is_line_art():
    """Long straight strokes drawn without anti-aliasing and zoomed in (a close-up page)
    alias into a spectral peak; with no screened area behind it the page is line art."""
    drawing = np.full((300, 300), 255, np.uint8)
    head = np.array([[20, 280], [40, 40], [120, 110], [180, 110], [260, 30], [280, 280]], np.int32)
    cv2.polylines(drawing, [head], False, 0, 9, lineType=cv2.LINE_8)
    cv2.ellipse(drawing, (150, 220), (50, 30), 0, 0, 360, 0, 9)
    page = cv2.resize(drawing[0:200, 40:240], (600, 600), interpolation=cv2.INTER_LINEAR)
    result = descreen(page)
    assert result.peaks and result.texture_share < 0.005  # the case: a peak, nothing screened
    assert classify_page(cv2.cvtColor(page, cv2.COLOR_GRAY2RGB)) == LINE


def test_noise_screen_is_tone_and_lettering_is_not_texture():
    color = draw_character(PALETTES["bob"])
    toned, _ = tone_page(color, np.random.default_rng(5), [Screen("noise", 6.0, 0.0)])
    assert classify_page(toned) == TONE
    page = draw_character(PALETTES["bob"], colored=False)
    for y in range(30, 120, 22):  # lines of small text on a line-art page
        cv2.putText(page, "HELLO THERE, HOW ARE YOU", (20, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    assert classify_page(page) == LINE


def test_small_lettering_in_a_balloon_is_not_a_screen():
    """On a small page, a balloon's letters are grains to the texture measures; inside a
    balloon they do not make the page tone, while a noise screen beside the same balloon does."""
    from chromaflow.models.synth_balloons import add_balloon

    truth = draw_character(PALETTES["alice"], size=(160, 224), frame=False)
    line = draw_character(PALETTES["alice"], size=(160, 224), colored=False, frame=False)
    page, _, balloon = add_balloon(line, truth, np.random.default_rng(0))
    assert balloon.letters.sum() > 100
    assert classify_page(page) == LINE
    toned, _ = tone_page(truth, np.random.default_rng(5), [Screen("noise", 6.0, 0.0)])
    toned = np.where(balloon.area[..., None], page, toned).astype(np.uint8)
    assert classify_page(toned) == TONE


@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_drawn_stripes_with_a_long_period_are_kept(angle):
    """3-px lines every 30 px: a drawing, not a screen, although its harmonics (15, 10,
    7.5 ... px) fall in the screen band. Its fundamental (30 px) is below the band."""
    page = np.full((400, 400), 255, np.uint8)
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    for offset in range(-600, 600, 30):  # lines across the page, perpendicular to `angle`
        x0, y0 = 200 + offset * c, 200 + offset * s
        cv2.line(page, (int(x0 - 600 * s), int(y0 + 600 * c)), (int(x0 + 600 * s), int(y0 - 600 * c)), 0, 3,
                 cv2.LINE_AA)
    assert detect_screen_peaks(page.astype(np.float32)) == []
    result = descreen(page)
    assert np.abs(result.gray - page).max() < 1.0  # every stripe kept as drawn
    assert classify_page(cv2.cvtColor(page, cv2.COLOR_GRAY2RGB)) == LINE


@pytest.mark.parametrize("period,level", [(5.0, 150), (7.0, 215), (7.0, 90)])
def test_noise_screen_is_flattened_to_its_gray(period, level):
    """A noise screen inks a grain where the darkness exceeds a uniform random threshold,
    so its coverage is the gray's darkness: the flattened tone is that gray."""
    color = np.full((400, 400, 3), 255, np.uint8)
    color[80:320, 80:320] = level
    page, _ = tone_page(color, np.random.default_rng(2), [Screen("noise", period, 0.0)])
    raw = gray_of(page).astype(np.float32)
    inside = np.zeros((400, 400), bool)
    inside[110:290, 110:290] = True
    flat = descreen(raw).gray
    assert raw[inside].std() > 40
    assert flat[inside].std() < 20, flat[inside].std()
    assert abs(flat[inside].mean() - level) < 8
    assert flat[20:60, 20:380].mean() > 245


@pytest.mark.parametrize("level", [190, 150, 65])
def test_noise_screen_whose_grains_clump_is_flattened_and_the_stroke_stays(level):
    """Coarse grains (period 9: ~3 px) at 25, 41 and 75 % coverage touch each other: the
    pieces are bigger than specks and the runs longer than a fine screen's. Before
    clumped_zone the square stayed black and white (std 84 / - / 96, rng seed 2). At 41 %
    the grains are still the dark minority: taken for a dark screen (light holes), std 45."""
    color = np.full((400, 400, 3), 255, np.uint8)
    color[80:320, 80:320] = level
    cv2.line(color, (40, 200), (360, 210), (0, 0, 0), 5)
    page, _ = tone_page(color, np.random.default_rng(2), [Screen("noise", 9.0, 0.0)])
    raw = gray_of(page).astype(np.float32)
    inside = np.zeros((400, 400), bool)
    inside[110:290, 110:290] = True
    inside[185:225] = False
    flat = descreen(raw).gray
    assert raw[inside].std() > 100
    assert flat[inside].std() < 40, flat[inside].std()
    assert abs(flat[inside].mean() - level) < 10
    assert np.median(flat[200:210, 60:340].min(axis=0)) < 60  # the stroke across it stays black
    assert classify_page(page) == TONE


def test_a_grain_zone_grows_to_the_closed_regions_it_mostly_covers_by_hand():
    ink = np.zeros((20, 40), bool)
    ink[2, 2:38] = ink[17, 2:38] = ink[2:18, 2] = ink[2:18, 37] = ink[2:18, 20] = True  # two boxes
    zone = np.zeros_like(ink)
    zone[3:10, 3:14] = True  # 77 of the left box's 14 x 17 = 238 px: 0.32
    zone[3:9, 21:31] = True  # 60 of the right box's 14 x 16 = 224 px: 0.27
    zone[0:2, :] = True  # the paper around them, touching the image's edge
    grown = screened_regions(zone, ink)
    assert grown[3:17, 3:20].all()  # the left box, whole
    assert np.array_equal(grown[:, 21:37], zone[:, 21:37])  # the right box, as it was
    assert not grown[ink].any() and not grown[18:].any()  # no ink; the paper keeps its zone only
    periodic = np.zeros_like(ink)
    periodic[3:9, 3:20] = True  # 102 of 238 px of the left box under a periodic screen: grown
    assert screened_regions(zone, ink, periodic)[3:17, 3:20].all()
    periodic[9:12, 3:20] = True  # 153 px, more than half: the dots the notches left, not grown
    assert np.array_equal(screened_regions(zone, ink, periodic), zone)
    balloon = np.zeros_like(ink)
    balloon[2:18, 2:21] = True  # the left box is a speech balloon: its letters are no screen
    asked = []
    balloons = lambda: asked.append(1) or balloon  # noqa: E731
    assert np.array_equal(screened_regions(zone, ink, lettering=balloons), zone)
    zone[3:10, 21:37] = True  # now the right box grows too; the balloon still does not
    grown = screened_regions(zone, ink, lettering=balloons)
    assert grown[3:17, 21:37].all() and np.array_equal(grown[:, :21], zone[:, :21])
    assert len(asked) == 2
    screened_regions(np.zeros_like(zone), ink, lettering=balloons)
    assert len(asked) == 2  # no region would grow: the balloons are not looked for


@pytest.mark.parametrize("level", [225, 210])
def test_a_light_noise_screen_is_flattened_over_the_whole_region_it_fills(level):
    """A light face (a circle with an eye) under a coarse noise screen (period 9.5): where
    its grains clump, the speck rule leaves holes in the grain zone, and there the specks
    stayed (std 37 / 56 inside; the dev set's yellow smiley 1f62e came out half white).
    The screen fills the region its outline closes: all of it is flattened, the eye and
    the outline stay black."""
    color = np.full((400, 400, 3), 255, np.uint8)
    cv2.circle(color, (200, 200), 130, (level,) * 3, -1)
    cv2.circle(color, (200, 200), 130, (0, 0, 0), 6)
    cv2.circle(color, (160, 170), 12, (0, 0, 0), -1)
    page, _ = tone_page(color, np.random.default_rng(2), [Screen("noise", 9.5, 0.0)])
    raw = gray_of(page).astype(np.float32)
    yy, xx = np.mgrid[:400, :400]
    inside = ((yy - 200) ** 2 + (xx - 200) ** 2 < 110 ** 2) & ((yy - 170) ** 2 + (xx - 160) ** 2 > 30 ** 2)
    flat = descreen(raw).gray
    assert raw[inside].std() > 70
    assert flat[inside].std() < 20, flat[inside].std()
    assert abs(flat[inside].mean() - level) < 8
    assert flat[165:175, 155:165].max() < 60  # the eye
    assert np.median(flat[195:205, 66:74].min(axis=1)) < 60  # the outline
    assert flat[5:40, 5:395].mean() > 245  # the paper around it is not screened


@pytest.mark.parametrize("seed", [2, 3])
def test_an_edge_between_two_dot_screens_stays_sharp(seed):
    """Two grays side by side, no stroke between them, each printed with its own dot
    screen (5.7 and 9.25 px) and scanned: what the notches leave crosses mid-gray like a
    noise screen, but it is their residue, not a screen of its own (clumped_zone's energy
    test). Taken for a dark noise screen it is smoothed over ~15 px and the edge between
    the grays spreads from 16 to 28 px (10-90 %)."""
    color = np.full((400, 400, 3), 255, np.uint8)
    color[60:340, 60:200] = 150
    color[60:340, 200:340] = 100
    page, _ = tone_page(color, np.random.default_rng(seed), [Screen("dots", 5.7, 21.0), Screen("dots", 9.25, 60.0)])
    page = scan_degrade(page, np.random.default_rng(seed))[0]
    profile = descreen(gray_of(page).astype(np.float32)).gray[100:300, 170:230].mean(axis=0)
    left, right = profile[:10].mean(), profile[-10:].mean()
    assert left - right > 35
    step = (profile - right) / (left - right)
    assert ((step > 0.1) & (step < 0.9)).sum() < 21


def test_tufts_of_fine_strokes_are_not_a_noise_screen():
    """Six tufts of 1-px strokes (lashes, stubble) have a clumped noise screen's runs and
    specks, each on under 1 % of the page: line art (with no area floor: tone)."""
    page = draw_character(PALETTES["alice"], size=(600, 600), colored=False, frame=False)
    rng = np.random.default_rng(0)
    for cx, cy in [(x, y) for x in (150, 300, 450) for y in (200, 400)]:
        for _ in range(45):
            x0, y0 = cx + rng.integers(-22, 23), cy + rng.integers(-22, 23)
            a, length = rng.uniform(0, np.pi), rng.uniform(5, 12)
            cv2.line(page, (int(x0), int(y0)), (int(x0 + length * np.cos(a)), int(y0 + length * np.sin(a))),
                     (0, 0, 0), 1, cv2.LINE_AA)
    assert classify_page(page) == LINE


def test_lettering_on_a_scanned_noise_screened_page_is_kept():
    """A scan's specks make a balloon's letters look like a clumped noise screen; the
    balloon's lettering is never smoothed (page_styles.descreen_page). Without the balloon
    test, 0.76 of the letters' dark pixels stay dark instead of 0.88."""
    from chromaflow.models.page_styles import descreen_page
    from chromaflow.models.synth_balloons import add_balloon

    truth = draw_character(PALETTES["alice"], size=(400, 560), frame=False)
    line = draw_character(PALETTES["alice"], size=(400, 560), colored=False, frame=False)
    page, _, balloon = add_balloon(line, truth, np.random.default_rng(1))
    toned, _ = tone_page(truth, np.random.default_rng(5), [Screen("noise", 9.0, 0.0)])
    toned = scan_degrade(np.where(balloon.area[..., None], page, toned).astype(np.uint8), np.random.default_rng(1))[0]
    raw = gray_of(toned).astype(np.float32)
    letters = balloon.letters
    dark = (raw[letters] < 100).mean()
    assert dark > 0.8
    flat = descreen_page(raw).gray
    assert (flat[letters] < 100).mean() > dark - 0.02
    # ... while the screen beside the balloon is flattened (the character's biggest color;
    # with the balloon's inside searched instead of its outside: std 51)
    colors, index, counts = np.unique(truth.reshape(-1, 3), axis=0, return_inverse=True, return_counts=True)
    drawn = (colors.max(1) - colors.min(1) > 30)
    biggest = np.flatnonzero(drawn)[np.argmax(counts[drawn])]
    part = cv2.erode(((index.reshape(truth.shape[:2]) == biggest) & ~balloon.area).astype(np.uint8),
                     np.ones((9, 9), np.uint8)) > 0
    assert raw[part].std() > 80
    assert flat[part].std() < 35, flat[part].std()


def test_tone_page_lightness_is_the_fill_plus_the_smooth_shading():
    """Hand case: a region whose screen reads 20 levels darker than its fill, with a smooth
    ramp across it, and a stroke: the region takes the fill's lightness plus the ramp's
    deviation from the region's mean; the stroke keeps the page's lightness."""
    from chromaflow.models.colorizers.composite import tone_lightness

    labels = np.ones((60, 80), np.int32)
    labels[:, 38:42] = 0  # a stroke
    labels[:, 42:] = 2
    fill = np.zeros((60, 80, 3), np.uint8)
    fill[:] = (200, 120, 90)
    fill_l = float(cv2.cvtColor(fill[:1, :1], cv2.COLOR_RGB2LAB)[0, 0, 0])
    page_l = np.full((60, 80), fill_l - 20.0, np.float32)
    page_l[:, :38] += np.linspace(-6, 6, 38)[None, :]  # region 1: a ramp of +-6
    page_l[:, 38:42] = 10.0
    lab = np.zeros((60, 80, 3), np.uint8)
    lab[..., 0] = np.clip(page_l + 0.5, 0, 255).astype(np.uint8)
    lab[..., 1:] = 128
    shade = cv2.cvtColor(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), cv2.COLOR_RGB2GRAY)
    out = tone_lightness(fill, shade, labels).astype(np.float32)
    assert abs(out[:, 43:].mean() - fill_l) < 2 and out[:, 43:].std() < 1  # flat region 2: the fill
    assert abs(out[:, 5:33].mean() - fill_l) < 2  # region 1 centred on the fill ...
    ramp = out[30, 5:33]
    assert ramp[-1] - ramp[0] > 6  # ... with its ramp kept
    assert out[:, 39:41].max() < 20  # the stroke stays dark
