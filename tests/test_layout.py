"""docs/layout.md names every module of the package: a module added without a line there fails here."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "deepfake_detect"


def _required() -> list[str]:
    """What layout.md must name: each module (``data.py``; in a sub-package ``plots/curves.py``) and each
    sub-package (``plots/``); the model registry as ``models/`` only (its modules are the zoo)."""
    names = set()
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG)
        if rel.parts[0] == "models":
            names.add("models/")
            continue
        if len(rel.parts) > 1:
            names.add(f"{rel.parts[0]}/")
        if f.name != "__init__.py" or len(rel.parts) == 1:
            names.add(rel.as_posix())
    return sorted(names)


def test_layout_names_every_module():
    text = (REPO / "docs" / "layout.md").read_text()
    missing = [n for n in _required() if not re.search(rf"(?<![\w/.]){re.escape(n)}(?![\w])", text)]
    assert not missing, f"docs/layout.md does not name {missing}: add a line saying what each does"


def test_the_check_sees_a_module_left_out():
    assert "plots/curves.py" in _required() and "models/" in _required() and "robustness.py" in _required()
    assert not re.search(r"(?<![\w/.])robustness\.py(?![\w])", "plots/robustness.py only")
