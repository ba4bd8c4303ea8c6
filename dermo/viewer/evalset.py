"""An evaluation folder (dermo evaluate's eval-<split>/ or predict/, dermo ensemble's output) as the viewer's table.

    ev = EvalSet.load("runs/NAME/eval-val").check(classes)     # classes: the models'; check() before use
    ev.table()      # JSON-ready: classes, rows (row, name, label, predicted, confidence, probs, lesion focus)
    ev.image(i)     # the image path of row i (read by the server, never named by the browser)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dermo.evaluation.report import prob_columns
from dermo.viewer.problems import NotFound, ViewerError
from dermo.viewer.render import number

PREDICTIONS = "predictions.csv"
FIGURES = ("cams.png", "confusion_matrix.png", "roc.png", "report.txt", "metrics.json")


@dataclass
class EvalSet:
    folder: Path
    frame: pd.DataFrame
    classes: list[str] | None = None        # set by check(): the models' classes
    stale: str | None = None                # set by note_stale(): the evaluation scored another model version

    @classmethod
    def load(cls, folder) -> "EvalSet":
        folder = Path(folder)
        csv = folder / PREDICTIONS
        if not csv.is_file():
            raise ViewerError(f"--eval {folder}: no {PREDICTIONS} (an evaluation folder written by dermo evaluate "
                              "or dermo ensemble)")
        try:
            frame = pd.read_csv(csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ViewerError(f"{csv}: not a readable CSV ({type(e).__name__})") from None
        return cls(folder, frame.reset_index(drop=True))

    def check(self, classes: list[str]) -> "EvalSet":
        """The table for the models' `classes`: predictions.csv must hold their probability columns."""
        missing = [c for c in ["path", *prob_columns(classes)] if c not in self.frame.columns]
        if missing:
            raise ViewerError(f"{self.folder / PREDICTIONS}: no column {', '.join(missing)}; it was not written "
                              f"for these models' classes ({', '.join(classes)}): pass the models it evaluated")
        self.classes = list(classes)
        return self

    def note_stale(self, model_paths, log=print) -> None:
        """Say (on the console and above the table) when the evaluation scored another version of the model: the
        probabilities in its table would not be the ones a row view computes now."""
        from dermo.evaluation.scoring import stale_note

        notes = [n for n in (stale_note(self.folder, p) for p in model_paths) if n]
        if len(model_paths) == 1 and notes:
            self.stale = notes[0].removeprefix("note: ")
            log(notes[0])

    def table(self) -> dict:
        probs = self.frame[prob_columns(self.classes)].to_numpy(float)             # (N,K)
        f = self.frame
        rows = [{"row": i, "name": Path(str(p)).name, "path": str(p),
                 "label": str(f["label"][i]) if "label" in f else None,
                 "predicted": self.classes[int(probs[i].argmax())],
                 "confidence": number(probs[i].max()), "probs": [number(x) for x in probs[i]],
                 "lesion_focus": number(f["lesion_focus"][i]) if "lesion_focus" in f else None}
                for i, p in enumerate(f["path"])]
        return {"folder": str(self.folder), "stale": self.stale, "classes": self.classes, "labelled": "label" in f,
                "has_focus": "lesion_focus" in f, "rows": rows,
                "figures": [name for name in FIGURES if (self.folder / name).is_file()]}

    def row(self, index: int) -> tuple[Path, str | None]:
        """(image path, true label or None) of row `index`; a relative path is taken from the current folder,
        else from the evaluation folder."""
        if not 0 <= index < len(self.frame):
            raise NotFound(f"{self.folder / PREDICTIONS}: no row {index} (it has {len(self.frame)})")
        path = Path(str(self.frame["path"][index]))
        if not path.is_absolute() and not path.exists() and (self.folder / path).exists():
            path = self.folder / path
        label = self.frame["label"][index] if "label" in self.frame else None
        return path, None if label is None else str(label)
