"""dermo export: a run's (or a model file's) classifier as SavedModel, TFLite or ONNX, plus a JSON sidecar
(docs/method.md §10).

    dermo export --run runs/NAME --format savedmodel|tflite|onnx [...] [--with-cams] [--out DIR]
    dermo export --model FILE.keras|FILE.h5 --format ...      (a file carrying dermo's contract)
    dermo export --run runs/NAME --format tflite --quantize int8   (full-integer TFLite for phones/edge TPUs)

Writes OUT/savedmodel/, OUT/model.tflite and/or OUT/model.onnx (OUT default RUN/export/, or export/ beside a
model file), each with its sidecar OUT/<that name>.json. Input: the preprocessed image (B,S,S,3) float32 RGB
0..255, as the Keras model takes it; outputs "probs" (B,K), calibrated with the stored temperature, and with
--with-cams "cams" (B,h,w,K). Before anything is put in place, each file is run by its own runtime on
CHECK_IMAGES synthetic dermoscopy-like images and compared with the Keras model as dermo's Predictor runs it;
a difference above the tolerance is one error line and no file.

--quantize int8 (TFLite only, a run folder): full-integer quantisation, the activation ranges calibrated on
REPRESENTATIVE_IMAGES images drawn (seed 0) from the run's *training* split through the run's preprocessing; written as
OUT/model_int8.tflite beside any float export, with input and output still float32. Its check tolerance is
INT8_TOLERANCE (int8 rounding moves probabilities by a few hundredths); how much accuracy it costs on real images is
measured by benchmarks/int8_export.py.

Models trained with --meta-columns (a second input "meta") are refused in one line: the check images, the
runtimes' feeds and the sidecar describe the single image input.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from dermo.console import library_chatter_held, parser
from dermo.errors import run_cli
from dermo.export.formats import FORMATS, QUANTIZE, ExportError, artefact_name

CHECK_IMAGES = 2
TOLERANCE = 1e-4          # max |Δ| of probabilities; CAMs: 1e-4 relative to their largest magnitude
INT8_TOLERANCE = {"probs": 0.15, "cams": 0.3}     # an int8 file: probabilities; CAMs relative
REPRESENTATIVE_IMAGES = 100
PROG = "dermo export"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = parser(prog, __doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder written by dermo train (default: none; this or --model)")
    src.add_argument("--model", help="a .keras/.h5 classifier carrying dermo's contract (default: none)")
    p.add_argument("--format", required=True, nargs="+", choices=FORMATS,
                   help="what to write (several: one SavedModel is converted to each; required)")
    p.add_argument("--quantize", choices=QUANTIZE, default="none",
                   help="int8: full-integer TFLite (--format tflite, --run), calibrated on training images")
    p.add_argument("--with-cams", action="store_true",
                   help="also output every class's CAM (B,h,w,K), computed in the graph")
    p.add_argument("--out", help="output folder (default: RUN/export/, or export/ beside --model)")
    return p.parse_args(argv)


def check_images(predictor, n: int = CHECK_IMAGES) -> np.ndarray:
    """n synthetic dermoscopy-like images (seed 0) after the model's preprocessing: (n,S,S,3) float32 0..255.
    Uniform noise would not do: it drives the backbone's features ~1000x beyond those of real images, where
    float32 round-off of different kernels is no longer small."""
    from dermo.data.synthetic_draw import draw_lesion_image

    rng = np.random.default_rng(0)
    images = [draw_lesion_image(("nevus", "mel")[i % 2], rng, 128)[0] for i in range(n)]
    return predictor.preprocess(images)[0]


def reference(predictor, x: np.ndarray, with_cams: bool) -> dict:
    """What dermo's Predictor gives for preprocessed images x: calibrated probs [and CAMs]."""
    from dermo.predict.predictions import BatchPredictor

    probs, cams = BatchPredictor(predictor.model, with_cams, tta=1)(x)
    out = {"probs": np.asarray(predictor.calibrated(probs), np.float32)}
    if with_cams:
        out["cams"] = cams
    return out


def differences(ref: dict, got: dict) -> dict:
    """max |Δ| per output; a missing output or another shape is an ExportError."""
    diff = {}
    for name, want in ref.items():
        have = got.get(name)
        if have is None or np.shape(have) != np.shape(want):
            raise ExportError(f"the exported model's output {name!r} is {None if have is None else np.shape(have)}"
                              f", not {np.shape(want)}")
        diff[name] = float(np.max(np.abs(np.asarray(have, np.float64) - want)))
    return diff


def keep_earlier_exports(out: Path, fmts: list[str], args) -> None:
    """An earlier export in `out` is replaced only by one with the same outputs: re-exporting with or without
    --with-cams would otherwise silently change what a user's app reads from that file."""
    import json

    wanted = ["probs"] + (["cams"] if args.with_cams else [])
    for fmt in fmts:
        sidecar = out / f"{artefact_name(fmt, args.quantize)}.json"
        if not sidecar.exists():
            continue
        earlier = sorted(json.loads(sidecar.read_text()).get("outputs", {}))
        if earlier != sorted(wanted):
            flag = "with --with-cams" if "cams" in earlier else "without --with-cams"
            raise ExportError(f"{sidecar.with_suffix('')} was exported {flag} (outputs {', '.join(earlier)}); this "
                              f"export's outputs are {', '.join(wanted)}: export it {flag} to replace it alike, or "
                              "write to another --out")


def representative_images(predictor, run_dir, n: int = REPRESENTATIVE_IMAGES) -> np.ndarray:
    """n images (seed 0) of the run's training split after its preprocessing: (n,S,S,3) float32 0..255."""
    from dermo.run.splits import training_paths

    paths = sorted(training_paths(run_dir) or ())
    if not paths:
        raise ExportError(f"{run_dir}: no training split recorded (split.csv) to calibrate --quantize int8 on")
    chosen = np.random.default_rng(0).choice(len(paths), size=min(n, len(paths)), replace=False)
    return predictor.preprocess([paths[i] for i in sorted(chosen)])[0]


def check(diff: dict, ref: dict, fmt: str, quantize: str = "none") -> dict:
    """The tolerance of each output; one line when the exported file disagrees with the Keras model."""
    bound = INT8_TOLERANCE if quantize == "int8" else {"probs": TOLERANCE, "cams": TOLERANCE}
    tol = {"probs": bound["probs"]}
    if "cams" in ref:
        tol["cams"] = bound["cams"] * max(1.0, float(np.abs(ref["cams"]).max()))
    bad = [f"{k} by {diff[k]:.3g} (tolerance {tol[k]:.3g})" for k in diff if not diff[k] <= tol[k]]
    if bad:
        raise ExportError(f"the {fmt} file differs from the Keras model on {CHECK_IMAGES} synthetic images "
                          f"({'; '.join(bad)}); nothing written. A model whose outputs swing under float32 "
                          "round-off (e.g. a few epochs from scratch) cannot be exported faithfully: train it "
                          "longer or export without --with-cams")
    return tol


def sidecar(source, predictor, fmt: str, ref: dict, diff: dict, tol: dict, x: np.ndarray,
            quantize: str = "none") -> dict:
    """What a user outside dermo needs: classes, input, preprocessing, temperature, outputs, the check."""
    from dermo import __version__
    from dermo.run.contract import read_contract

    contract = read_contract(source.model_path) or {}
    settings = predictor.settings
    t = predictor.temperature
    outputs = {"probs": {"shape": [None, len(predictor.classes)],
                         "meaning": "class probabilities, columns in `classes` order"
                                    + (f", calibrated: softmax(log p / {t:g}) applied in the graph" if t != 1
                                       else " (uncalibrated: temperature 1)")}}
    if "cams" in ref:
        outputs["cams"] = {"shape": [None, *ref["cams"].shape[1:]],
                           "meaning": "CAM_k = sum_c F[..., c] W[c, k] of the feature map and classifier kernel; "
                                      "not affected by the temperature"}
    quantization = ("none (float32)" if quantize == "none" else
                    f"int8: full-integer ops, float32 input/output, calibrated on {REPRESENTATIVE_IMAGES} images of "
                    "the run's training split")
    return {"format": fmt, "file": artefact_name(fmt, quantize), "quantization": quantization,
            "classes": list(predictor.classes),
            "task": contract.get("task"), "image_size": predictor.image_size,
            "input": {"name": "image", "shape": [None, predictor.image_size, predictor.image_size, 3],
                      "dtype": "float32", "meaning": "RGB 0..255 after dermo's preprocessing, resized to "
                      "image_size x image_size (INTER_AREA); normalisation is inside the model"},
            "preprocessing": {"hair": predictor.hair, "color": predictor.color,
                              "color_region": predictor.color_region, "mask_grow": predictor.mask_grow, "p": settings.p,
                              "cache_size": settings.size,
                              "steps": "field of view, hair removal (hair), Shades of Gray colour constancy with "
                                       "Minkowski p (color) estimated over color_region (fov: the field of view; "
                                       "skin: outside the lesion), shorter side cache_size; docs/method.md §2"},
            "temperature": t, "outputs": outputs, "backbone": contract.get("backbone"),
            "feature_layer": contract.get("feature_layer"), "source_model": str(source.model_path),
            "dermo_version": __version__,
            "check": {"images": len(x), "input": "synthetic dermoscopy-like images (seed 0)", "max_abs_diff": diff,
                      "tolerance": tol}}


def export(args, log=print) -> dict[str, dict]:
    """Export, check each file against the Keras model, then put the files and sidecars in place; returns
    {format: sidecar}."""
    from dermo.evaluation.sources import predictor_for, resolve_source
    from dermo.export import formats, runtime
    from dermo.export.graph import export_graph
    from dermo.run.folder import write_json

    fmts = list(dict.fromkeys(args.format))
    if args.quantize != "none" and (fmts != ["tflite"] or not args.run):
        raise ExportError(f"--quantize {args.quantize} applies to --format tflite of a --run (whose training images "
                          "calibrate it); export the other formats in a separate call")
    for fmt in fmts:
        formats.check_tools(fmt)
    source = resolve_source(args.run or args.model, "auto", "run" if args.run else "model", own_run=True)
    if source.meta_columns:
        raise ExportError(f"{source.spec}: takes metadata ({', '.join(source.meta_columns)}) as a second input; "
                          "export supports image-only models, so use it through dermo's Predictor (or retrain "
                          "without --meta-columns to export)")
    if source.classes is None:
        raise ExportError(f"{source.spec}: the file records no class names (saved without dermo's contract); "
                          "export its run folder with --run")
    predictor = predictor_for(source, source.classes)
    out = Path(args.out) if args.out else (source.run.path if source.run else source.model_path.parent) / "export"
    keep_earlier_exports(out, fmts, args)
    x = check_images(predictor)
    ref = reference(predictor, x, args.with_cams)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        representative = representative_images(predictor, source.run.path) if args.quantize == "int8" else None
        artefacts = formats.write(export_graph(predictor.model, predictor.temperature, args.with_cams), fmts,
                                  work, representative)
        checked = {}
        for fmt, artefact in artefacts.items():
            with library_chatter_held():                  # the TFLite interpreter's start-up line
                diff = differences(ref, runtime.load(artefact, fmt)(x))
            checked[fmt] = (diff, check(diff, ref, fmt, args.quantize))
        sidecars = {}
        for fmt, artefact in artefacts.items():
            path = formats.place(artefact, out / artefact_name(fmt, args.quantize))
            sidecars[fmt] = sidecar(source, predictor, fmt, ref, *checked[fmt], x, args.quantize)
            write_json(path.with_name(path.name + ".json"), sidecars[fmt])
            log(f"wrote {path} and {path.name}.json (max |Δ| vs the Keras model: "
                + ", ".join(f"{k} {v:.2g}" for k, v in checked[fmt][0].items()) + ")")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"temperature {predictor.temperature:g}; classes {', '.join(predictor.classes)}; input "
        f"(B, {predictor.image_size}, {predictor.image_size}, 3) float32 0..255 after dermo's preprocessing")
    return sidecars


def main(argv=None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        source = Path(args.run or args.model)
        if not source.exists():                  # answered before TensorFlow is imported
            raise ExportError(f"{source}: {'run folder' if args.run else 'model file'} not found")
        export(args)
        return 0

    return run_cli(body, prog)


if __name__ == "__main__":
    sys.exit(main())
