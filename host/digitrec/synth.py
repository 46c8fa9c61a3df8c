"""Synthetic rotating-drum digits rendered from TrueType fonts.

The training meters show a handful of fonts; a new meter's font is the main cause of
misread digits on meters the models never saw (docs/experiments.md, "Many held-out
meters"). ``render_batch`` draws drum crops in other fonts with the dataset's label
convention: at reading ``d.f`` the window shows digit ``d`` moved up by about ``f`` of a digit
pitch (``roll_offset``, checked by ``digitrec synth --roll-check``), with ``d + 1`` coming in
from below. The crops then take the same path as a camera
crop (``preprocess.prepare``), and training mixes them into its training split only
(``digitrec train --synth FRACTION``); validation and test stay real images.

Fonts come from installed packages pinned in requirements.txt, so every machine with the
project installed renders the same images for the same seed: the ``matplotlib`` set is
matplotlib's bundled DejaVu, STIX and Computer Modern; ``more`` adds Roboto, Lato, Source Sans
Pro and reportlab's URW clones of Helvetica, Times and Courier (``train --synth-fonts``);
``most`` adds Fjalla One, Hanken Grotesk, Manrope, Red Hat Display and Caladea to those.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from digitrec import labels, preprocess

# matplotlib's bundled fonts with distinct digit shapes (upright only: drums are upright)
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf",
)
# (package, file inside it) of the ``more`` set's additions, upright weights only
MORE_FONT_FILES = (
    ("font_roboto", "files/Roboto-Regular.ttf"), ("font_roboto", "files/Roboto-Bold.ttf"),
    ("font_lato", "files/Lato-Regular.ttf"), ("font_lato", "files/Lato-Black.ttf"),
    ("font_source_sans_pro", "files/SourceSansPro-Regular.ttf"),
    ("font_source_sans_pro", "files/SourceSansPro-Bold.ttf"),
    ("reportlab", "fonts/_a______.pfb"), ("reportlab", "fonts/_ab_____.pfb"),  # Helvetica, bold
    ("reportlab", "fonts/_er_____.pfb"), ("reportlab", "fonts/cob_____.pfb"),  # Times, Courier bold
)
# (package, file) of the ``most`` set's additions to ``more``: a condensed face (Fjalla One),
# geometric and grotesque sans (Hanken Grotesk, Manrope, Red Hat Display) and a serif (Caladea)
MOST_FONT_FILES = (
    ("font_fjallaone", "files/FjallaOne-Regular.ttf"),
    ("font_hanken_grotesk", "files/HankenGrotesk-Regular.otf"),
    ("font_hanken_grotesk", "files/HankenGrotesk-Bold.otf"),
    ("font_manrope", "files/Manrope-Regular.ttf"), ("font_manrope", "files/Manrope-ExtraBold.ttf"),
    ("font_rhd", "files/RedHatDisplay-Regular.ttf"), ("font_rhd", "files/RedHatDisplay-Black.ttf"),
    ("font_caladea", "files/Caladea-Regular.ttf"),
)
FONT_SETS = ("matplotlib", "more", "most")
# where rolls are drawn: every tenth alike, none at x.4/x.5, or x.4/x.5 three times as often as the others
TENTHS_DRAWN = ("all", "clear", "flip")
CANVAS = (64, 40)  # height, width of a rendered crop before the camera path resizes it to 32x20
# Real drums are not read linearly: models trained on real meters read a flat roll drawn at
# x.1-x.2 about 0.4 tenths high and at x.7-x.9 about 0.35 low (docs/experiments.md). Drawing the
# roll at f - ROLL_BEND * sin(2 pi f) of a pitch matches their convention.
ROLL_BEND = 0.04
# Bumped when the drawing changes; the card's training.synth.renderer says which a model saw:
# 1 flat roll, centre jitter 0.06 of the height; 2 ROLL_BEND; 3 ROLL_BEND, centre jitter 0.02.
RENDERER = 3


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _package_dir(package: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"synthetic digits: font package {package!r} is not installed "
                                f"(pip install -r requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def font_paths(fonts: str = "matplotlib") -> list[Path]:
    """The fonts synthetic digits are drawn in (set ``fonts``); a missing one is an error naming it."""
    if fonts not in FONT_SETS:
        raise ValueError(f"synthetic digits: font set {fonts!r} is not one of {', '.join(FONT_SETS)}")
    paths = [font_dir() / name for name in FONT_FILES]
    extra = {"matplotlib": (), "more": MORE_FONT_FILES, "most": MORE_FONT_FILES + MOST_FONT_FILES}[fonts]
    paths += [_package_dir(pkg) / rel for pkg, rel in extra]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"synthetic digits: font file(s) not found: {', '.join(missing)}")
    return paths


def _colors(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(digit, background) RGB: mostly light digits on a dark drum, some dark on light, some red."""
    dark = rng.uniform(0, 90)
    light = rng.uniform(dark + 60, 255)
    fg, bg = (light, dark) if rng.random() < 0.7 else (dark, light)
    fg_rgb = np.full(3, fg) + rng.uniform(-15, 15, 3)
    bg_rgb = np.full(3, bg) + rng.uniform(-15, 15, 3)
    if rng.random() < 0.12:  # red last drum
        fg_rgb = np.array([rng.uniform(150, 255), rng.uniform(0, 70), rng.uniform(0, 70)])
    clip = lambda c: tuple(int(v) for v in np.clip(c, 0, 255))  # noqa: E731
    return clip(fg_rgb), clip(bg_rgb)


def _glyph_font(path: Path, digit_height: float):
    """The font at the size whose digit '8' is ``digit_height`` pixels tall."""
    from PIL import ImageFont

    probe = ImageFont.truetype(str(path), 100)
    _, top, _, bottom = probe.getbbox("8")
    return ImageFont.truetype(str(path), max(6, int(round(100 * digit_height / (bottom - top)))))


def roll_offset(fraction: float) -> float:
    """How far (in digit pitches) the drum has rolled up at reading ``d + fraction``."""
    return fraction - ROLL_BEND * float(np.sin(2 * np.pi * fraction))


def render(tenths: int, font_path: Path, rng: np.random.Generator) -> np.ndarray:
    """One drum crop (CANVAS, RGB uint8) showing reading ``tenths / 10`` in the font."""
    from PIL import Image, ImageDraw, ImageFilter

    h, w = CANVAS
    stretch = rng.uniform(0.75, 1.35)  # narrow and wide fonts: draw wider or narrower, then resize
    wide = int(round(w * stretch))
    digit_h = h * rng.uniform(0.5, 0.75)
    pitch = digit_h * rng.uniform(1.2, 1.6)
    font = _glyph_font(font_path, digit_h)
    fg, bg = _colors(rng)
    img = Image.new("RGB", (wide, h), bg)
    draw = ImageDraw.Draw(img)
    digit, frac = divmod(int(tenths), 10)
    offset = roll_offset(frac / 10) + rng.uniform(-0.03, 0.03)  # labels are read by eye: about +-0.3 of a tenth
    cx = wide / 2 + rng.uniform(-0.08, 0.08) * wide
    # vertical position is the tenth: keep it close (training's shift_y augmentation adds its own)
    cy = h / 2 + rng.uniform(-0.02, 0.02) * h
    stroke = int(rng.integers(0, 2)) if digit_h > 30 else 0
    _, top, _, bottom = font.getbbox("8", anchor="ls")
    for k in (-1, 0, 1, 2):  # the digit before, this one, and the two after on the drum
        baseline = cy + (k - offset) * pitch - (top + bottom) / 2  # glyph centred on its slot
        draw.text((cx, baseline), str((digit + k) % 10), font=font, fill=fg, anchor="ms",
                  stroke_width=stroke, stroke_fill=fg)
    img = img.resize((w, h), Image.BILINEAR)
    rgb = _shade(np.asarray(img, dtype=np.float32), rng)
    img = Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))
    return _jpeg(img, int(rng.integers(40, 95)))


def _shade(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drum curvature (darker towards top and bottom), uneven light, dark window edges."""
    h, w = rgb.shape[:2]
    yy = np.linspace(-1, 1, h)[:, None, None]
    xx = np.linspace(-1, 1, w)[None, :, None]
    curve = 1 - rng.uniform(0, 0.5) * yy**2
    light = 1 + rng.uniform(-0.25, 0.25) * xx + rng.uniform(-0.25, 0.25) * yy
    out = rgb * curve * light
    if rng.random() < 0.3:  # the meter's window frame at a side
        edge = int(rng.integers(1, 5))
        side = slice(0, edge) if rng.random() < 0.5 else slice(w - edge, w)
        out[:, side] *= rng.uniform(0.1, 0.6)
    return np.clip(out, 0, 255).astype(np.uint8)


def _jpeg(img, quality: int) -> np.ndarray:
    """The crop as a camera's JPEG would deliver it."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return preprocess.decode_rgb(buf.getvalue())


def tenths_to_draw(tenths_drawn: str = "all") -> np.ndarray:
    """The tenths (0..99) a synthetic roll is drawn at, one picked uniformly from this list: each
    once ("all"), none at x.4/x.5, where the rounded digit flips ("clear"), or those three times
    ("flip")."""
    if tenths_drawn not in TENTHS_DRAWN:
        raise ValueError(f"synthetic digits: tenths {tenths_drawn!r} is not one of {', '.join(TENTHS_DRAWN)}")
    at_flip = np.isin(np.arange(100) % 10, (4, 5))
    times = {"all": np.ones(100, int), "clear": np.where(at_flip, 0, 1), "flip": np.where(at_flip, 3, 1)}
    return np.repeat(np.arange(100), times[tenths_drawn])


def render_batch(n: int, color: str, classes: int, seed: int = 0, fonts: str = "matplotlib",
                 tenths_drawn: str = "all") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` synthetic crops through the camera path: (N x 32 x 20 x C uint8, labels, tenths).

    Tenths are drawn from :func:`tenths_to_draw` (uniform over 0..99 by default) and fonts
    cycle, each image drawn from its own seeded generator, so the set is the same on every run
    and machine for the same arguments.
    """
    paths = font_paths(fonts)
    values = tenths_to_draw(tenths_drawn)
    tenths = values[np.random.default_rng([seed, 7]).integers(0, len(values), n)]
    channels = 1 if color == "gray" else 3
    x = np.zeros((n, preprocess.HEIGHT, preprocess.WIDTH, channels), np.uint8)
    for i, t in enumerate(tenths):
        x[i] = preprocess.prepare(render(int(t), paths[i % len(paths)], np.random.default_rng([seed, 8, i])), color)
    y = tenths if classes == 100 else labels.class10_from_class100(tenths)
    return x, y.astype(np.int64), tenths.astype(np.int64)


def save_montage(path: Path, color: str = "gray", per_row: int = 12, rows: int = 8, seed: int = 0,
                 fonts: str = "matplotlib") -> Path:
    """A PNG of synthetic crops (3x enlarged) with their readings, to see what training mixes in."""
    from PIL import Image, ImageDraw

    x, _, tenths = render_batch(per_row * rows, color, 100, seed, fonts)
    cell_h, cell_w = preprocess.HEIGHT * 3, preprocess.WIDTH * 3
    sheet = Image.new("RGB", (per_row * cell_w, rows * (cell_h + 12)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (img, t) in enumerate(zip(x, tenths, strict=True)):
        r, c = divmod(i, per_row)
        tile = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).resize((cell_w, cell_h), Image.NEAREST)
        sheet.paste(tile, (c * cell_w, r * (cell_h + 12)))
        draw.text((c * cell_w + 2, r * (cell_h + 12) + cell_h), f"{t / 10:.1f}", fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def reading_errors(tflite: Path, n: int = 1500, seed: int = 123) -> tuple[np.ndarray, np.ndarray]:
    """Signed reading error (in tenths, circular) of a 100-class GRAY model on ``n`` synthetic
    crops, and the tenth each was drawn at (0..9)."""
    from digitrec import bench

    model = bench.load_model(Path(tflite).parent.name, Path(tflite))
    if model.classes != 100 or model.color != "GRAY":
        raise ValueError(f"{tflite}: roll check needs a 100-class GRAY model, not {model.classes} {model.color}")
    x, _, tenths = render_batch(n, "gray", 100, seed)
    pred = labels.read_class(bench.predict_batched(model.data, preprocess.to_int8(x, model.in_q)))
    return (pred - tenths + 50) % 100 - 50, tenths % 10


def roll_bias(tflite: Path, n: int = 1500, seed: int = 123) -> np.ndarray:
    """Mean signed reading error (in tenths) per drawn tenth 0..9. Near 0 everywhere when the
    drawn roll matches the model's convention; misreads by more than half a digit are left
    out (they are font errors, not roll errors)."""
    return _bias_per_tenth(*reading_errors(tflite, n, seed))


def _bias_per_tenth(err: np.ndarray, frac: np.ndarray) -> np.ndarray:
    return np.array([err[(frac == f) & (np.abs(err) <= 5)].mean() for f in range(10)])


def print_roll_bias(tflite: Path) -> None:
    err, frac = reading_errors(tflite)
    bias = _bias_per_tenth(err, frac)
    print(f"{tflite}: synthetic crops read exactly {np.mean(err == 0):.1%}, within 0.1 "
          f"{np.mean(np.abs(err) <= 1):.1%}; mean error per drawn tenth (ROLL_BEND = {ROLL_BEND}):")
    print("drawn at  " + " ".join(f"x.{f:<4d}" for f in range(10)))
    print("error     " + " ".join(f"{b:+.2f} " for b in bias))


def run(args: argparse.Namespace) -> int:
    if args.roll_check:
        for path in args.roll_check:
            print_roll_bias(Path(path))
        return 0
    print(save_montage(Path(args.montage), args.color, seed=args.seed, fonts=args.fonts))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="draw a montage of the synthetic font digits `train --synth` mixes in")
    p.add_argument("--montage", default="reports/synth_montage.png", help="PNG to write")
    p.add_argument("--color", choices=("gray", "rgb"), default="gray")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fonts", choices=FONT_SETS, default="matplotlib", help="font set (as train --synth-fonts)")
    p.add_argument("--roll-check", nargs="+", metavar="TFLITE",
                   help="instead: how 100-class GRAY models read synthetic crops, per drawn tenth")
    p.set_defaults(func=run)
