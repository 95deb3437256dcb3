"""Hostile model metadata: class names that are spreadsheet formulas, and fields of the wrong type.

A model's metadata is input like any other file: its class names end up in cells.csv and tissue_tiles.csv,
which pathologists open in Excel. Names starting with = + - @ (or tab / CR) must be neutralised (OWASP CSV
injection), numbers must stay numbers, and a field of the wrong type must give one line naming the field.
"""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.backends.base import ModelMeta
from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.writers import ClassTable
from cellvit_trt.runtime.writers.base import csv_text
from cellvit_trt.runtime.writers.table import CSVWriter

HOSTILE = ["Background", '=HYPERLINK("http://x","y")', "+1+2", "-3", "@SUM(A1)", "\tTab", "\rCR", "Plain"]


def _batch(n: int) -> CellBatch:
    ids = np.arange(n)
    return CellBatch(
        centroid=np.stack([-12.5 + ids, 3.0 + ids], 1).astype(np.float64),  # negative x: stays a number
        bbox=np.tile([[-20, -20, 5, 5]], (n, 1)).astype(np.float64),
        contours=[np.array([[0, 0], [4, 0], [4, 4]], np.float64)] * n,
        area=np.full(n, 16, np.int32),
        type=(ids % len(HOSTILE)).astype(np.int16),
        type_prob=np.full(n, 0.5, np.float32),
        tile=np.zeros((n, 2), np.int32),
        cell_status=np.zeros(n, np.int8),
        edge=np.zeros((n, 4), np.uint8),
        bbox_region=np.zeros((n, 4)),
        contours_region=[None] * n,
        id=ids.astype(np.int64),
    )


def test_formula_like_class_names_are_neutralised_and_numbers_stay_numbers(tmp_path):
    classes = ClassTable.from_meta(SimpleNamespace(class_names=tuple(HOSTILE), class_colors=()))
    w = CSVWriter(tmp_path / "cells.csv", classes, area_um2_per_px=0.0625)
    w.write(_batch(len(HOSTILE)))
    w.close()
    rows = list(csv.DictReader(open(tmp_path / "cells.csv", newline="", encoding="utf-8")))
    assert len(rows) == len(HOSTILE)
    for row, name in zip(rows, HOSTILE, strict=True):
        shown = row["type_name"]
        assert not shown.startswith(("=", "+", "-", "@", "\t", "\r")), shown
        assert shown.lstrip("'") == name  # the name itself is kept, only made inert
        assert float(row["x"]) < 0 or row["x"][0].isdigit()  # numbers are never prefixed
    assert rows[0]["x"] == "-12.50" and rows[0]["bbox_rmin"] == "-20"


@pytest.mark.parametrize("name", ["=1+1", "+1", "-1", "@A1", "\tx", "\rx"])
def test_csv_text_prefixes_every_formula_start(name):
    assert csv_text(name).startswith("\"'")


def test_csv_text_leaves_plain_text_and_quotes_quotes():
    assert csv_text("Neoplastic") == '"Neoplastic"'
    assert csv_text('a "b"') == '"a ""b"""'


GOOD = {"tile_size": 256, "nuclei_names": ["Background", "A"], "nuclei_colors": [[0, 0, 0], [255, 0, 0]]}


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("target_mpp", "abc", "a positive number"),
        ("target_mpp", -0.25, "a positive number"),
        ("magnification", [40], "a positive number"),
        ("nuclei_colors", [[0, 0, 0], "red"], "[r, g, b] colours"),
        ("nuclei_colors", [[0, 0, 0], [256, 0, 0]], "[r, g, b] colours"),
        ("nuclei_names", ["Background", 7], "a list of names"),
        ("nuclei_names", "Background", "a list of names"),
        ("tissue_names", [None, "x"], "a list of names"),
        ("tile_size", "1024", "an integer >= 1"),
        ("tile_size", 0, "an integer >= 1"),
        ("overlap", 300, "an integer >= 0 and <= 255"),
        ("precision", "fp8", "one of fp32"),
        ("name", {"x": 1}, "a string"),
    ],
)
def test_wrong_metadata_fields_give_one_line_naming_the_field(field, value, expected):
    meta = {**GOOD, field: value}
    with pytest.raises(InputError) as exc:
        ModelMeta.from_json(json.dumps(meta), 256, "graph m.onnx")
    msg = str(exc.value)
    assert f"metadata field '{field}'" in msg and expected in msg and "graph m.onnx" in msg
    assert "\n" not in msg


def test_metadata_that_is_not_an_object_is_refused():
    with pytest.raises(InputError, match="expected an object"):
        ModelMeta.from_json("[1, 2]", 256, "engine e.engine")


def test_good_metadata_still_reads():
    m = ModelMeta.from_json(json.dumps({**GOOD, "target_mpp": 0.5, "magnification": 20}), 256, "g")
    assert (m.tile_size, m.class_names, m.class_colors[1], m.target_mpp) == (
        256,
        ("Background", "A"),
        (255, 0, 0),
        0.5,
    )
