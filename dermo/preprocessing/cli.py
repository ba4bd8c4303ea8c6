"""The preprocessing command: write preprocessed images and lesion masks for inspection.

    dermo preprocess INPUT OUTPUT [--size N] [--no-hair] [--no-color] [--workers N]
                     [--on-bad-image error|skip] [--cache-dir DIR]

INPUT is an image folder (searched recursively; `<stem>_mask.png` beside an image is its given lesion mask)
or a CSV manifest (dermo.data.manifest) with an `image` and an optional `mask` column. For every image it
writes `OUTPUT/<relative path>/<stem>.png` (preprocessed, see dermo.preprocessing.image) and
`<stem>_mask.png` (uint8 0/255), going through the cache.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from dermo.data import imageio
from dermo.data.imageio import BadInputError
from dermo.data.manifest import read_manifest
from dermo.preprocessing.color import REGIONS
from dermo.console import parser
from dermo.errors import DermoError, run_cli
from dermo.preprocessing.cache import PreprocessSettings, preprocess_many
from dermo.preprocessing.segment import GROW

PROG = "dermo preprocess"


def output_rel(name: str) -> Path:
    """Where a manifest entry's outputs go, relative to OUTPUT, without suffix: its path as written, or
    only its file name when that path is absolute or climbs with '..' (outputs never leave OUTPUT)."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        rel = Path(rel.name)
    return rel.with_suffix("") if rel.suffix else rel


def list_inputs(inp: Path, exclude: Path | None = None) -> list[tuple[Path, Path | None, Path]]:
    """INPUT folder or CSV -> [(image, given mask or None, output path without suffix), ...].

    Raises BadInputError for a CSV without an `image` column or a folder without images.
    """
    if inp.is_dir():
        ex = exclude.resolve() if exclude is not None else None
        out = []
        for f in sorted(inp.rglob("*")):
            if not f.is_file() or not imageio.is_image_file(f):
                continue
            if ex is not None and (ex == f.resolve().parent or ex in f.resolve().parents):
                continue                           # a previous run's outputs inside INPUT
            m = imageio.mask_path_for(f)
            out.append((f, m if m.is_file() else None, f.relative_to(inp).with_suffix("")))
        if not out:
            raise BadInputError(inp, "no images found in this folder")
        return out
    if inp.suffix.lower() != ".csv":
        raise BadInputError(inp, "INPUT must be an image folder or a .csv manifest")
    df = read_manifest(inp)
    out = [(Path(row["image"]), None if row.get("mask") is None else Path(row["mask"]),
            output_rel(row["entry"])) for row in df.to_dict("records")]
    if not out:
        raise BadInputError(inp, "CSV lists no images")
    return out


def main(argv=None, prog: str = PROG) -> int:
    ap = parser(prog, __doc__.split("\n")[0])
    ap.add_argument("input", type=Path, help="image folder (recursive) or CSV manifest")
    ap.add_argument("output", type=Path, help="folder for <stem>.png and <stem>_mask.png")
    ap.add_argument("--size", type=int, default=PreprocessSettings.size, help="shorter side in px")
    ap.add_argument("--no-hair", action="store_true", help="skip hair removal")
    ap.add_argument("--no-color", action="store_true", help="skip Shades-of-Gray colour constancy")
    ap.add_argument("--mask-grow", type=float, default=GROW,
                    help="margin of the generated lesion masks, a fraction of the shorter side (as dermo train)")
    ap.add_argument("--color-region", choices=REGIONS, default="fov",
                    help="where Shades of Gray estimates the illuminant: the field of view, or the skin outside "
                         "the lesion without saturated or strongly coloured pixels")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--on-bad-image", choices=("error", "skip"), default="error",
                    help="an unreadable image stops the command (error) or is skipped and listed")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="preprocessing cache (default: $DERMO_CACHE or ~/.cache/dermo)")
    args = ap.parse_args(argv)
    if args.size < 8:
        ap.error("--size must be at least 8")
    return run_cli(lambda: _run(args), prog)


def _run(args) -> int:
    t0 = time.perf_counter()
    settings = PreprocessSettings(size=args.size, hair=not args.no_hair, color=not args.no_color,
                                  color_region=args.color_region, mask_grow=args.mask_grow)
    try:
        if not args.input.exists():
            raise BadInputError(args.input, "INPUT not found")
        entries = list_inputs(args.input, exclude=args.output)
        seen: dict[Path, Path] = {}
        root = args.output.resolve()
        for src, _, rel in entries:
            if root not in (root / rel).resolve().parents:
                raise BadInputError(src, f"output name {rel} would lie outside {args.output}")
            if rel in seen:
                raise BadInputError(src, f"same output name as {seen[rel]} ({rel}.png)")
            seen[rel] = src
        results, skipped = preprocess_many([(s, m) for s, m, _ in entries], settings, args.cache_dir,
                                           args.workers, args.on_bad_image)
        written = 0
        for (_, _, rel), res in zip(entries, results):
            if res is None:
                continue
            dst = args.output / rel
            imageio.atomic_write_bytes(dst.with_name(dst.name + ".png"), res[0].read_bytes())
            imageio.atomic_write_bytes(dst.with_name(dst.name + "_mask.png"), res[1].read_bytes())
            written += 1
    except OSError as e:
        raise DermoError(str(e)) from None
    print(f"wrote {written} images + masks to {args.output}, skipped {len(skipped)}, "
          f"in {time.perf_counter() - t0:.1f} s")
    for msg in skipped:
        print(f"  skipped {msg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
