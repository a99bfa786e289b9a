"""Draw the 128 x 128 icons of the extension and its modules (a liver with a region graph on it).

    python Resources/make_icon.py

Writes Resources/Icons/REACTKD.png (extension), REACTKD/Resources/Icons/REACTKD.png (module, same image)
and REACTKDTraining/Resources/Icons/REACTKDTraining.png (same image with a training badge).
Drawn 4x larger and downsampled, for smooth edges. Needs Pillow only.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SIZE = 128
SCALE = 4

# Region graph: tumour (centre), ring around it, liver parenchyma nodes; coordinates on a 128 grid.
NODES = {"tumour": (70, 66), "ring": (52, 52), "liver1": (34, 70), "liver2": (92, 46), "liver3": (84, 86)}
EDGES = [("tumour", "ring"), ("tumour", "liver2"), ("tumour", "liver3"), ("ring", "liver1"),
         ("ring", "liver2"), ("liver1", "liver3")]
LIVER_OUTLINE = [(14, 58), (22, 40), (42, 30), (70, 28), (98, 30), (116, 38), (114, 50), (100, 66),
                 (86, 84), (70, 98), (52, 104), (34, 100), (20, 86)]


def _s(point: tuple[float, float]) -> tuple[float, float]:
    return point[0] * SCALE, point[1] * SCALE


def _disc(draw: ImageDraw.ImageDraw, centre, radius, fill, outline=None, width=0):
    x, y = _s(centre)
    r = radius * SCALE
    draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline, width=width * SCALE)


def draw_icon(badge: bool = False) -> Image.Image:
    """The icon as an RGBA image of SIZE x SIZE."""
    big = Image.new("RGBA", (SIZE * SCALE, SIZE * SCALE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(big)
    draw.rounded_rectangle((2 * SCALE, 2 * SCALE, (SIZE - 2) * SCALE, (SIZE - 2) * SCALE), radius=22 * SCALE,
                           fill=(24, 44, 66, 255))
    draw.polygon([_s(p) for p in LIVER_OUTLINE], fill=(150, 62, 48, 255), outline=(214, 120, 96, 255),
                 width=2 * SCALE)
    # Attention "heat" around the tumour: concentric discs from dim orange to bright yellow.
    for radius, colour in ((24, (196, 86, 40, 255)), (17, (232, 132, 40, 255)), (11, (250, 196, 64, 255))):
        _disc(draw, NODES["tumour"], radius, colour)
    for a, b in EDGES:
        draw.line([_s(NODES[a]), _s(NODES[b])], fill=(236, 240, 245, 255), width=3 * SCALE)
    for name, centre in NODES.items():
        radius = 7 if name == "tumour" else 5
        fill = (255, 250, 235, 255) if name == "tumour" else (120, 200, 230, 255)
        _disc(draw, centre, radius, fill, outline=(20, 30, 40, 255), width=1)
    if badge:  # training: a green "play" badge in the lower left corner
        _disc(draw, (26, 104), 16, (54, 170, 90, 255), outline=(236, 240, 245, 255), width=2)
        draw.polygon([_s((21, 95)), _s((21, 113)), _s((35, 104))], fill=(255, 255, 255, 255))
    return big.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    icon = draw_icon()
    for path in (REPO / "Resources/Icons/REACTKD.png", REPO / "REACTKD/Resources/Icons/REACTKD.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        icon.save(path, optimize=True)
    training = REPO / "REACTKDTraining/Resources/Icons/REACTKDTraining.png"
    training.parent.mkdir(parents=True, exist_ok=True)
    draw_icon(badge=True).save(training, optimize=True)


if __name__ == "__main__":
    main()
