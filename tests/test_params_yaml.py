"""Reading the params file: a key set twice, a tab, a list at the top, a syntax error -- each one line naming the
file, the line and the key, from the package and from the command line (exit 2), never a traceback or a
silently kept last value."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from deepfake_detect import cli
from deepfake_detect.config import ParamsError, load_params, read_params

from conftest import PARAMS_YAML


def _params_with(tmp_path: Path, edit) -> Path:
    """params.yaml with its lines changed by ``edit`` (a list of lines -> a list of lines), written to tmp_path."""
    lines = PARAMS_YAML.read_text().splitlines()
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


def _after(lines: list[str], pattern: str, new: str, start: str = "") -> list[str]:
    """``new`` inserted after the first line matching ``pattern`` (after the line ``start``, if given)."""
    begin = lines.index(start) if start else 0
    i = next(i for i in range(begin, len(lines)) if re.match(pattern, lines[i]))
    return lines[:i + 1] + [new] + lines[i + 1:]


def test_a_key_set_twice_names_the_key_and_both_lines(tmp_path, capsys):
    """`lr: 0.001` then `lr: 5.0` used to train with 5.0 outside DVC."""
    path = _params_with(tmp_path, lambda ls: _after(ls, r"  lr: ", "  lr: 5.0", start="train-defaults:"))
    first = next(i for i, ln in enumerate(PARAMS_YAML.read_text().splitlines(), 1) if ln.startswith("  lr: 0.001"))
    message = f"{path}, line {first + 1}: key 'train-defaults.lr' is set twice (first on line {first}); keep one"
    with pytest.raises(ParamsError) as e:
        load_params(path)
    assert str(e.value) == message
    assert cli.main(["train", "simplenet-fakes", "--params", str(path)]) == 2
    assert capsys.readouterr().err == f"deepfake-detect: error: {message}\n"


def test_a_top_level_key_set_twice(tmp_path):
    path = _params_with(tmp_path, lambda ls: ls + ["seed: 3"])
    with pytest.raises(ParamsError, match=r"line \d+: key 'seed' is set twice \(first on line \d+\)"):
        read_params(path)


def test_a_tab_is_one_line_saying_to_use_spaces(tmp_path, capsys):
    path = _params_with(tmp_path, lambda ls: [ln.replace("  lr: 0.001", "\tlr: 0.001", 1) for ln in ls])
    line = next(i for i, ln in enumerate(PARAMS_YAML.read_text().splitlines(), 1) if ln.startswith("  lr: 0.001"))
    assert cli.main(["prepare-splits", "--params", str(path)]) == 2
    assert capsys.readouterr().err == (f"deepfake-detect: error: {path}, line {line}, column 1: a tab; YAML indents "
                                       "with spaces only (replace the tab with spaces)\n")


@pytest.mark.parametrize("text, kind", [("- seed: 0\n- data: {}\n", "list"), ("just words\n", "str"),
                                        ("42\n", "int")])
def test_a_top_level_that_is_not_a_mapping_is_one_line(tmp_path, capsys, text, kind):
    (tmp_path / "params.yaml").write_text(text)
    assert cli.main(["prepare-splits", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == (f"deepfake-detect: error: {tmp_path / 'params.yaml'}: the top level must be a mapping of keys "
                   f"(seed: ..., data: ...), got a {kind}\n")


@pytest.mark.parametrize("text, message", [
    ("seed: [1, 2\n", r"params.yaml, line 2, column 1: not valid YAML: expected ',' or '\]', but got '<stream end>' "
                      r"\(while parsing a flow sequence\)$"),
    ("seed: 1\n  data: 2\n", r"params.yaml, line 2, column 7: not valid YAML: mapping values are not allowed here$"),
    ("seed: !!python/object:os.system x\n", r"params.yaml, line 1, column 7: not valid YAML: could not determine a "
                                            r"constructor for the tag 'tag:yaml.org,2002:python/object:os.system'"),
], ids=["unclosed", "indent", "python-tag"])
def test_yaml_syntax_errors_are_one_line_with_line_and_column(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError) as e:
        read_params(tmp_path / "params.yaml")
    assert "\n" not in str(e.value) and re.search(message, str(e.value)), str(e.value)


def test_valid_files_read_as_before(tmp_path):
    import yaml

    assert read_params(PARAMS_YAML) == yaml.safe_load(PARAMS_YAML.read_text())
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert read_params(tmp_path / "empty.yaml") == {}  # validation then names the first missing key
    (tmp_path / "alias.yaml").write_text("a: &x {b: 1, c: 'tab\tinside a value'}\nd: *x\n")
    assert read_params(tmp_path / "alias.yaml") == {"a": {"b": 1, "c": "tab\tinside a value"},
                                                    "d": {"b": 1, "c": "tab\tinside a value"}}
