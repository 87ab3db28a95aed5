"""Text that outputs must hold: spreadsheet-safe cells (CSV injection) and file names that are not UTF-8."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from deepfake_detect.io import path_bytes, path_text, spreadsheet_safe, write_csv


@pytest.mark.parametrize("cell, safe", [
    ('=HYPERLINK("http://example.com","x").png', '\'=HYPERLINK("http://example.com","x").png'),
    ("+1+2.png", "'+1+2.png"), ("-2+3.png", "'-2+3.png"), ("@SUM(A1).png", "'@SUM(A1).png"),
    ("\t=1.png", "'\t=1.png"), ("\r=1.png", "'\r=1.png"),
    ("imgs/=1.png", "imgs/=1.png"),  # a formula only where the cell starts
    ("photo.png", "photo.png"), ("", ""), (" =1", " =1"),
])
def test_spreadsheet_safe_quotes_cells_that_start_a_formula(cell, safe):
    assert spreadsheet_safe(cell) == safe


def test_spreadsheet_safe_cells_survive_a_csv_round_trip(tmp_path):
    names = ['=HYPERLINK("http://x","y").png', "a,b.png", 'quote".png', "-x.png"]
    write_csv(tmp_path / "p.csv", ({"path": spreadsheet_safe(n)} for n in names), ["path"])
    back = [r["path"] for r in csv.DictReader(open(tmp_path / "p.csv", newline=""))]
    assert back == ["'" + names[0], names[1], names[2], "'" + names[3]]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in back)


def test_path_text_of_a_latin1_name_is_utf8_and_gives_the_bytes_back(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # as os.listdir returns it: a lone surrogate for the byte 0xe9
    with pytest.raises(UnicodeEncodeError):
        name.encode("utf-8")
    text = path_text(tmp_path / name)
    assert text == f"{tmp_path}/caf\\xe9.png"
    assert path_bytes(text) == os.fsencode(tmp_path) + b"/caf\xe9.png"
    write_csv(tmp_path / "out.csv", [{"path": text}], ["path"])  # any UTF-8 writer takes it
    assert (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()[1] == text


def test_path_text_is_lossless_and_leaves_utf8_names_alone():
    assert path_text("imgs/café/ünï.png") == "imgs/café/ünï.png"
    assert path_text(b"x\\xe9".decode()) == "x\\\\xe9"  # a backslash in a name is doubled: no ambiguity
    rng = np.random.default_rng(0)
    names = [bytes(rng.integers(1, 256, rng.integers(1, 30), dtype=np.uint8)) for _ in range(2000)]
    names += [b"\\x41", b"\\\\", b"a\\", "é".encode() + b"\xe9", b"\xc3"]
    for raw in names:
        text = path_text(os.fsdecode(raw))
        text.encode("utf-8")  # never a surrogate left
        assert path_bytes(text) == raw, raw
    assert len({path_text(os.fsdecode(r)) for r in names}) == len(set(names))  # distinct names stay distinct
