"""dermo.data.metadata: the metadata encoding, by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dermo.data.manifest import DataError
from dermo.data.metadata import MetaEncoding, fit_encoding

TRAIN = [{"age": 30, "sex": "male", "site": "back"},
         {"age": 50, "sex": "female", "site": ""},
         {"age": None, "sex": "male", "site": "face"},
         {"age": math.nan, "sex": None, "site": "back"}]


def test_fit_numeric_and_categorical_columns():
    enc = fit_encoding(["age", "sex", "site"], TRAIN)
    # age: present 30, 50 -> mean 40, population sd 10
    assert enc.columns[0] == {"name": "age", "kind": "numeric", "mean": 40.0, "sd": 10.0}
    assert enc.columns[1] == {"name": "sex", "kind": "categorical", "categories": ["female", "male"]}
    assert enc.columns[2] == {"name": "site", "kind": "categorical", "categories": ["back", "face"]}
    assert enc.width == 2 + 3 + 3
    assert enc.feature_names() == ["age", "age=missing", "sex=female", "sex=male", "sex=missing",
                                   "site=back", "site=face", "site=missing"]


def test_encode_by_hand_with_missing_and_unseen_values():
    enc = fit_encoding(["age", "sex", "site"], TRAIN)
    rows = [{"age": 60, "sex": "female", "site": "face"},     # (60-40)/10 = 2
            {"age": "", "sex": "other", "site": None},        # missing age; unseen sex -> missing indicator
            ("25", "male", "back")]                           # tuples in column order; "25" -> -1.5
    want = np.array([[2.0, 0, 1, 0, 0, 0, 1, 0],
                     [0.0, 1, 0, 0, 1, 0, 0, 1],
                     [-1.5, 0, 0, 1, 0, 1, 0, 0]], np.float32)
    np.testing.assert_array_equal(enc.encode(rows), want)
    again = MetaEncoding.from_dict(enc.to_dict())              # what the model files store
    np.testing.assert_array_equal(again.encode(rows), want)


def test_constant_numeric_column_and_empty_column():
    enc = fit_encoding(["age"], [{"age": 7}, {"age": 7.0}])
    assert enc.columns[0]["sd"] == 1.0                         # no division by 0
    np.testing.assert_array_equal(enc.encode([{"age": 9}]), [[2.0, 0.0]])
    with pytest.raises(DataError, match="'age' is empty for every training image"):
        fit_encoding(["age"], [{"age": None}, {"age": ""}])
