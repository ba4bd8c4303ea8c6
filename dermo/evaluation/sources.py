"""What to evaluate: a run folder or a model file, its classes and its preprocessing settings.

    resolve_source(spec, task)  "runs/NAME" or "FILE.h5|.keras" -> Source (model path, classes, settings);
                                own_run=True: a model file inside a run folder is that run's model
    check_classes(source, ...)  the class list shared by the model and the data
    data_meta_columns(sources, data, log)  the metadata columns to read from --data for these models
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dermo.data.datasets import TASK_CLASSES, Sample
from dermo.data.metadata import MetaEncoding
from dermo.predict.loading import MODEL_SUFFIXES, PredictError
from dermo.run import folder as runs
from dermo.run.contract import read_contract


class EvaluationError(PredictError):
    """A model/data combination that cannot be evaluated; one line naming the file and the fix."""


@dataclass
class Source:
    """One model to evaluate: a model file, or a run folder (config.json + classes.json + model)."""
    spec: str                              # as given on the command line
    model_path: Path
    task: str
    classes: list[str] | None              # None: task auto without a run -> from the data
    run: runs.Run | None = None
    settings: dict = field(default_factory=dict)   # hair / color flags (empty: the model file's contract)
    cache_dir: str | None = None

    @property
    def meta_columns(self) -> list[str]:
        """The metadata columns the model takes (its contract's encoding; [] for an image-only model)."""
        enc = MetaEncoding.from_dict((read_contract(self.model_path) or {}).get("meta"))
        if enc is None and self.run is not None:
            enc = MetaEncoding.from_dict(self.run.config.meta_encoding)
        return enc.names if enc else []


def data_meta_columns(sources, data, log=print) -> list[str]:
    """The metadata columns that --data must provide for `sources` (in first-seen order): read from a CSV
    (a missing column is then one DataError line); a folder has none, so its images are fed with every
    metadata value missing (said in a note)."""
    names = list(dict.fromkeys(n for s in sources for n in s.meta_columns))
    if names and Path(data).is_dir():
        log(f"note: {data} is a folder, so it has no metadata: {', '.join(names)} are fed as missing; give a "
            "CSV manifest with those columns to use them")
        return []
    return names


def _run_source(spec, run: runs.Run, model_path: Path | None = None) -> Source:
    cfg = run.config
    return Source(str(spec), model_path or run.model_path, cfg.task, list(run.classes), run,
                  {"hair": cfg.hair_removal, "color": cfg.color_constancy, "color_region": cfg.color_region},
                  cfg.cache_dir)


def resolve_source(spec, task: str = "auto", kind: str = "auto", own_run: bool = False) -> Source:
    """A run folder or a model file (`task` gives its class names); kind "run" / "model" insists on
    one of them, "auto" takes a directory for a run. With `own_run`, a model file whose folder holds
    config.json belongs to that run (its classes, preprocessing flags, data and split)."""
    p = Path(spec)
    if kind == "run" or (kind == "auto" and p.is_dir()):
        return _run_source(spec, runs.load_run(p))
    if p.is_dir():
        raise EvaluationError(f"{spec}: is a folder, not a model file (evaluate a run folder with --run)")
    if p.suffix.lower() not in MODEL_SUFFIXES:
        raise EvaluationError(f"{spec}: neither a run folder nor a .h5/.keras model file")
    if not p.is_file():
        raise EvaluationError(f"{spec}: model file not found")
    named = list(TASK_CLASSES[task]) if task in TASK_CLASSES else None
    if own_run and (folder := runs.run_folder_of(p)) is not None:
        source = _run_source(spec, runs.load_run(folder), p)
        if named and source.classes != named:
            raise EvaluationError(f"{spec}: the model's run ({folder}) has classes {', '.join(source.classes)}, not "
                                  f"task {task}'s ({', '.join(named)}); leave out --task")
        return source
    recorded = (read_contract(p) or {}).get("classes")
    if recorded and named and list(recorded) != named:
        raise EvaluationError(f"{spec}: the model was trained on classes {', '.join(recorded)}, not task "
                              f"{task}'s ({', '.join(named)}); leave out --task")
    return Source(str(spec), p, task, list(recorded) if recorded else named)


def predictor_for(source: Source, classes: list[str], cache_dir=None, batch_size: int = 16):
    """The Predictor of `source` with its own preprocessing (run config, else the model file's contract)."""
    from dermo.predict.predictor import Predictor

    return Predictor.from_model(source.model_path, classes, cache_dir=cache_dir or source.cache_dir,
                                batch_size=batch_size, **source.settings)


def check_classes(source: Source, data_classes: list[str], data) -> list[str]:
    """The class list to use: the source's, which must equal the data's; else one clear line."""
    if source.classes is None:
        return list(data_classes)
    if list(data_classes) != list(source.classes):
        raise EvaluationError(f"{data}: classes {', '.join(data_classes)} differ from the model's "
                              f"({source.spec}: {', '.join(source.classes)}); use data with the same "
                              "class names")
    return list(source.classes)


def mask_source(samples: list[Sample]) -> str:
    """"given" when every sample has its own mask, "generated" when none has, else "mixed"."""
    given = sum(s.mask is not None for s in samples)
    return "given" if given == len(samples) else "generated" if given == 0 else "mixed"
