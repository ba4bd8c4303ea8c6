"""What the viewer answers, free of HTTP: the models' info, the view of an uploaded image or of an evaluation
row, the evaluation table, and the files of the run and eval folders (nothing outside them).

    viewer = Viewer(Members.load(["runs/NAME"]), EvalSet.load(...).check(classes) or None, max_upload=20 * MB)
    viewer.upload("lesion.jpg", data)   viewer.eval_row(3)   viewer.file("eval", "cams.png")

Every refusal is a dermo.viewer.problems error with one line for the page.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dermo.data.imageio import read_image
from dermo.viewer.evalset import EvalSet
from dermo.viewer.members import Members
from dermo.viewer.problems import NotFound, TooLarge
from dermo.viewer.render import image_view

MB = 2 ** 20


def upload_name(name: str | None) -> str:
    """The file name an upload is called by in messages: its last path part, at most 120 characters."""
    name = Path(str(name or "")).name.strip()
    return name[:120] or "upload"


@dataclass
class Viewer:
    members: Members
    evalset: EvalSet | None = None
    max_upload: int = 20 * MB            # bytes

    def info(self) -> dict:
        runs = self.members.run_folders
        return {"classes": self.members.classes, "weights": self.members.weights,
                "members": [{"name": n, "image_size": p.image_size, "files": f"m{i}" if f"m{i}" in runs else None}
                            for i, (n, p) in enumerate(zip(self.members.names, self.members.predictors))],
                "max_upload": self.max_upload, "eval": self.evalset is not None}

    def check_size(self, name: str, size: int) -> None:
        if size > self.max_upload:
            raise TooLarge(f"{upload_name(name)}: upload too large ({size / MB:.1f} MB; the limit is "
                           f"{self.max_upload / MB:g} MB, set by --max-upload-mb)")

    def _view(self, name: str, image, source, meta: dict | None = None) -> dict:
        start = time.perf_counter()
        probs, preds = self.members.predict(source, meta)
        view = image_view(name, image, self.members.classes, probs, list(zip(self.members.names, preds)))
        view["seconds"] = round(time.perf_counter() - start, 3)
        return view

    def upload(self, name: str, data: bytes) -> dict:
        """An uploaded file's bytes -> its view; not an image, truncated or too many pixels: one line."""
        name = upload_name(name)
        self.check_size(name, len(data))
        image = read_image(name, data)
        return self._view(name, image, image)

    def _evaluation(self) -> EvalSet:
        if self.evalset is None:
            raise NotFound("no evaluation folder: start the viewer with --eval runs/NAME/eval-val")
        return self.evalset

    def eval_table(self) -> dict:
        return self._evaluation().table()

    def eval_row(self, index: int) -> dict:
        """Row `index` of predictions.csv, predicted from its image path as dermo evaluate did (with the mask
        beside it, if any, and the metadata the members' runs recorded for it: uploads have none)."""
        path, label = self._evaluation().row(index)
        if not path.is_file():
            raise NotFound(f"row {index}: {path} is not there any more (moved or deleted)")
        view = self._view(path.name, read_image(path), str(path), self.members.meta_of(path))
        view.update(row=index, label=label)
        return view

    def roots(self) -> dict[str, Path]:
        """The folders whose files may be served: "eval" and "m<i>" (the members' run folders)."""
        roots = dict(self.members.run_folders)
        if self.evalset is not None:
            roots["eval"] = self.evalset.folder
        return {k: v.resolve() for k, v in roots.items()}

    def file(self, root: str, relative: str) -> Path:
        """A regular file inside one of roots() (links followed, then checked); else NotFound."""
        base = self.roots().get(root)
        target = (base / relative).resolve() if base is not None and relative else None
        if target is None or not target.is_relative_to(base) or not target.is_file():
            raise NotFound(f"/files/{root}/{relative}: no such file in the run or evaluation folders")
        return target
