"""The model(s) behind the viewer: one run, or an ensemble of runs and model files, each predicting through
its own Predictor (its input size and preprocessing), soft-voted as dermo ensemble does.

    members = Members.load(["runs/a", "runs/cv", "b.keras"], task="auto", weights=None)
    probs, predictions = members.predict(image)     # image: a path or a uint8 RGB array (H,W,3)

A run folder is a member; a cross-validation folder (dermo cv) or another folder of run folders is
one member per run inside it; a model file inside a run folder is that run's model; a bare model file takes its classes
from its contract, else from --task.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermo import metrics
from dermo.evaluation.sources import Source, predictor_for, resolve_source
from dermo.run.folder import fold_runs, is_cv_folder
from dermo.run.folder import CONFIG
from dermo.run.splits import META_PREFIX, read_split
from dermo.viewer.problems import ViewerError


def expand(spec) -> list[str]:
    """A run folder or model file -> [spec]; a cross-validation folder (dermo cv) -> its fold runs in
    fold order; another folder of run folders -> its runs (sorted by name)."""
    p = Path(spec)
    if not p.is_dir() or (p / CONFIG).is_file():
        return [str(spec)]
    if is_cv_folder(p):
        return [str(f) for f in fold_runs(p)]
    runs = sorted(str(c.parent) for c in p.glob(f"*/{CONFIG}"))
    if not runs:
        raise ViewerError(f"{spec}: neither a run folder ({CONFIG}) nor a folder of run folders; pass a run "
                          "written by dermo train, or model files with --models")
    return runs


@dataclass
class Members:
    sources: list[Source]
    predictors: list              # dermo.predict.Predictor, one per source
    weights: list[float] | None   # soft-vote weights, None = equal

    def __post_init__(self):
        self._lock = threading.Lock()      # one prediction at a time: the models share 2 cores anyway

    @classmethod
    def load(cls, specs, task: str = "auto", weights=None, cache_dir=None) -> "Members":
        specs = [s for spec in specs for s in expand(spec)]
        if weights is not None and len(weights) != len(specs):
            raise ViewerError(f"--weights: {len(weights)} weights for {len(specs)} models "
                              f"({', '.join(specs)})")
        if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
            raise ViewerError("--weights must be non-negative with a positive sum")
        sources = [resolve_source(s, task, own_run=True) for s in specs]
        for s in sources:
            if s.classes is None:
                raise ViewerError(f"{s.spec}: the model file records no class names; pass --task "
                                  "binary|multiclass")
        if len({tuple(s.classes) for s in sources}) > 1:
            listing = "; ".join(f"{s.spec}: {', '.join(s.classes)}" for s in sources)
            raise ViewerError(f"the models disagree on their classes ({listing}); view models of one class "
                              "list together")
        predictors = [predictor_for(s, s.classes, cache_dir, batch_size=1) for s in sources]
        return cls(sources, predictors, None if weights is None else [float(w) for w in weights])

    @property
    def classes(self) -> list[str]:
        return list(self.predictors[0].classes)

    @property
    def names(self) -> list[str]:
        return [s.spec for s in self.sources]

    @property
    def run_folders(self) -> dict[str, Path]:
        """{"m<i>": run folder} of the members that come from a run (served under /files/m<i>/)."""
        return {f"m{i}": s.run.path for i, s in enumerate(self.sources) if s.run is not None}

    def warm_up(self) -> None:
        """Trace every member's graph once (on a grey image), so that the first upload answers as fast as the
        next ones."""
        self.predict(np.full((64, 64, 3), 128, np.uint8))

    def meta_of(self, path) -> dict:
        """The raw metadata of an image the members' runs recorded (split.csv meta:<name> columns), {} if none."""
        values = {}
        if all(p.meta is None for p in self.predictors):
            return values
        for folder in self.run_folders.values():
            df = read_split(folder)
            if df is None or not any(c.startswith(META_PREFIX) for c in df.columns):
                continue
            rows = df[df["path"] == str(Path(path).resolve())]
            for c in (c for c in df.columns if c.startswith(META_PREFIX) and len(rows)):
                values.setdefault(c[len(META_PREFIX):], rows[c].iloc[0] or None)
        return values

    def predict(self, image, meta: dict | None = None) -> tuple[np.ndarray, list]:
        """A path or uint8 RGB array -> (soft-voted probabilities (K,), each member's Prediction); `meta`: the
        image's raw metadata for members trained with --meta-columns (None: all missing)."""
        with self._lock:
            preds = [p.predict(image, meta=meta) if p.meta is not None else p.predict(image)
                     for p in self.predictors]
        probs = metrics.soft_vote([p.probs for p in preds], self.weights)[0]
        return probs, preds
