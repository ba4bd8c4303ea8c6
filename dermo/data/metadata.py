"""Patient metadata (age, sex, anatomical site, …) as model input: an encoding fitted on the training images.

    enc = fit_encoding(["age_approx", "sex"], train_rows)    rows: dicts (or tuples in column order) of raw values
    enc.encode(rows) -> float32 (N, enc.width)               the same for val, test and new images
    MetaEncoding.from_dict(enc.to_dict())                    stored in config.json and inside the model files

Each column becomes, in column order:
    numeric      [ (v − mean) / sd , missing ]      mean and sd of the training values; a missing value gives
                                                    0 (the mean) with the indicator 1
    categorical  [ one-hot over the training categories (sorted) , missing ]
                                                    a missing value, or a category never seen in training, sets
                                                    only the indicator
A column is numeric when every training value that is present parses as a number. Missing: empty, NaN, None.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dermo.data.manifest import DataError


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _text(v) -> str:
    f = _number(v)
    return str(int(f)) if f is not None and f.is_integer() and not isinstance(v, str) else str(v).strip()


@dataclass
class MetaEncoding:
    columns: list[dict] = field(default_factory=list)   # {"name", "kind": numeric|categorical, ...}

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    @property
    def width(self) -> int:
        return sum(2 if c["kind"] == "numeric" else len(c["categories"]) + 1 for c in self.columns)

    def feature_names(self) -> list[str]:
        out = []
        for c in self.columns:
            if c["kind"] == "numeric":
                out += [c["name"], f"{c['name']}=missing"]
            else:
                out += [f"{c['name']}={k}" for k in c["categories"]] + [f"{c['name']}=missing"]
        return out

    def encode(self, rows) -> np.ndarray:
        """rows: dicts keyed by column name (or tuples in column order) -> float32 (N, width)."""
        out = np.zeros((len(rows), self.width), np.float32)
        for i, row in enumerate(rows):
            values = [row.get(n) for n in self.names] if isinstance(row, dict) else list(row)
            j = 0
            for c, v in zip(self.columns, values):
                if c["kind"] == "numeric":
                    x = None if _missing(v) else _number(v)
                    if x is None:
                        out[i, j + 1] = 1.0
                    else:
                        out[i, j] = (x - c["mean"]) / c["sd"]
                    j += 2
                else:
                    cats = c["categories"]
                    k = None if _missing(v) else (cats.index(_text(v)) if _text(v) in cats else None)
                    out[i, j + (len(cats) if k is None else k)] = 1.0
                    j += len(cats) + 1
        return out

    def to_dict(self) -> dict:
        return {"columns": self.columns}

    @classmethod
    def from_dict(cls, d: dict | None) -> "MetaEncoding | None":
        return None if not d else cls(list(d["columns"]))


def fit_encoding(names: list[str], rows, source="data") -> MetaEncoding:
    """The encoding of `names` fitted on the training rows (dicts or tuples in `names` order)."""
    columns = []
    for j, name in enumerate(names):
        values = [row.get(name) if isinstance(row, dict) else row[j] for row in rows]
        present = [v for v in values if not _missing(v)]
        if not present:
            raise DataError(f"{source}: metadata column '{name}' is empty for every training image; drop it "
                            "from --meta-columns")
        numbers = [_number(v) for v in present]
        if all(x is not None for x in numbers):
            sd = float(np.std(numbers))
            columns.append({"name": name, "kind": "numeric", "mean": float(np.mean(numbers)),
                            "sd": sd if sd > 0 else 1.0})
        else:
            columns.append({"name": name, "kind": "categorical", "categories": sorted({_text(v) for v in present})})
    return MetaEncoding(columns)
