"""Draw one simple SVG per seed item into src/catalog/pictures (run after editing seed_data.json).

    uv run python services/catalog/scripts/make_pictures.py [--out DIR]

The output is deterministic, and a test checks that the committed pictures match it.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from xml.sax.saxutils import escape

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "catalog"

# Background per type, accent per brand: the catalog reads at a glance.
TYPE_COLORS = {
    "Backpacks": ("#2f5d50", "#4f8a78"),
    "Camp Kitchen": ("#7a3e2b", "#b5653f"),
    "Footwear": ("#4a3f6b", "#7467a3"),
    "Jackets": ("#1f4e79", "#3f7fbf"),
    "Lighting": ("#3b3b3b", "#6b6b6b"),
    "Sleeping Bags": ("#5b2c4f", "#93507f"),
    "Tents": ("#3c5a1e", "#6a9a35"),
}
BRAND_ACCENTS = {
    "Alpenglow": "#ff9e6d",
    "Bluewater Co.": "#6ed3ff",
    "Northwind Outfitters": "#f4d35e",
    "Ridgeline": "#9be37f",
    "Summit Forge": "#ff6b6b",
    "TrailCraft": "#e0c3fc",
}
ICONS = {
    "Tents": '<path d="M150 210 L240 80 L330 210 Z"/><path d="M220 210 L240 150 L260 210 Z" '
    'fill="#00000055"/>',
    "Backpacks": '<rect x="185" y="80" width="110" height="135" rx="28"/>'
    '<rect x="205" y="150" width="70" height="45" rx="10" fill="#00000040"/>'
    '<path d="M215 80 Q240 50 265 80" fill="none" stroke-width="10" stroke="currentColor"/>',
    "Jackets": '<path d="M200 80 L240 95 L280 80 L330 110 L310 150 L290 140 L290 215 L190 215 '
    'L190 140 L170 150 L150 110 Z"/><path d="M240 95 L240 215" stroke="#00000055" '
    'stroke-width="4"/>',
    "Footwear": '<path d="M190 85 L250 85 L255 160 Q320 165 330 195 L330 212 L175 212 L175 190 Z"/>'
    '<path d="M175 200 L330 200" stroke="#00000055" stroke-width="8"/>',
    "Sleeping Bags": '<rect x="165" y="105" width="150" height="90" rx="45"/>'
    '<circle cx="205" cy="150" r="26" fill="#00000040"/>',
    "Camp Kitchen": '<rect x="180" y="120" width="120" height="85" rx="12"/>'
    '<rect x="168" y="110" width="144" height="14" rx="7"/>'
    '<path d="M215 95 q10 -15 0 -30 M240 95 q10 -15 0 -30 M265 95 q10 -15 0 -30" '
    'fill="none" stroke="currentColor" stroke-width="5"/>',
    "Lighting": '<circle cx="240" cy="145" r="45"/><g stroke="currentColor" stroke-width="7">'
    '<path d="M240 70 v-22 M240 220 v22 M165 145 h-22 M315 145 h22 M187 92 l-15 -15 '
    'M293 198 l15 15 M293 92 l15 -15 M187 198 l-15 15"/></g>',
}


def render(item: dict[str, str]) -> str:
    dark, light = TYPE_COLORS[item["type"]]
    accent = BRAND_ACCENTS[item["brand"]]
    lines = textwrap.wrap(item["name"], width=26)[:2]
    text = "".join(
        f'<text x="240" y="{282 + 30 * i}" font-size="24" font-weight="600" '
        f'text-anchor="middle">{escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="480" height="360" viewBox="0 0 480 360" '
        f'role="img" aria-label="{escape(item["name"], {chr(34): "&quot;"})}">'
        f'<defs><linearGradient id="bg" x1="0" y1="0" x2="0" y2="1">'
        f'<stop offset="0" stop-color="{light}"/><stop offset="1" stop-color="{dark}"/>'
        "</linearGradient></defs>"
        '<rect width="480" height="360" fill="url(#bg)"/>'
        f'<g fill="{accent}" color="{accent}">{ICONS[item["type"]]}</g>'
        f'<g fill="#ffffff" font-family="Helvetica, Arial, sans-serif">{text}'
        f'<text x="24" y="40" font-size="16" fill="{accent}" font-weight="700" '
        f'letter-spacing="2">{escape(item["brand"].upper())}</text></g>'
        "</svg>\n"
    )


def write_pictures(seed_file: Path, out_dir: Path) -> list[Path]:
    seed = json.loads(seed_file.read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for item in seed["items"]:
        path = out_dir / item["pictureFileName"]
        path.write_text(render(item), encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=Path, default=PACKAGE_DIR / "seed_data.json")
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR / "pictures")
    args = parser.parse_args()
    written = write_pictures(args.seed, args.out)
    print(f"wrote {len(written)} pictures to {args.out}")


if __name__ == "__main__":
    main()
