"""No module of the package reaches into another module's private names.

A leading underscore says "only this module uses it", so it can change without a look elsewhere; a name
another module needs is public (no underscore) and lives where it belongs. Read statically (ast) over
src/deepfake_detect: ``from .x import _name`` and ``x._name`` (``x`` bound to another package module) are
violations; a module's own private names, and dunders such as ``__file__``, are fine.
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PKG = REPO / "src" / "deepfake_detect"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str, root: Path) -> bool:
    base = root.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def violations(root: Path) -> list[str]:
    """``file:line: what`` for every reach into another package module's private names under ``root``."""
    top = root.name
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}  # local name -> the package module it is bound to
        where = f"{path.relative_to(root.parent)}"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(node, module, path.name == "__init__.py")
                if base.split(".")[0] != top:
                    continue
                for a in node.names:
                    target = f"{base}.{a.name}"
                    if _is_module(target, root):
                        aliases[a.asname or a.name] = target
                    if _private(a.name) and base != module:
                        found.append(f"{where}:{node.lineno}: from {base} import {a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == top:  # `import pkg.x` binds pkg, `import pkg.x as y` binds y
                        first = a.name.split(".")[0]
                        aliases[a.asname or first] = a.name if a.asname else first
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                base = _dotted(node.value)
                if base is None:
                    continue
                head, _, rest = base.partition(".")
                target = aliases.get(head)
                if target is None:
                    continue
                target = ".".join([target] + ([rest] if rest else []))
                if _is_module(target, root) and target != module:
                    found.append(f"{where}:{node.lineno}: {target}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    assert violations(PKG) == []


def test_the_check_finds_each_kind_of_reach(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("_secret = 1\n__all__ = []\n\ndef _helper():\n    return _secret\n")
    (pkg / "sub" / "b.py").write_text("def _inner():\n    pass\n")
    (pkg / "c.py").write_text(
        "import pkg.a\n"
        "from . import a\n"
        "from .a import _helper, __all__\n"
        "from .sub import b as bee\n"
        "from . import sub\n"
        "\n"
        "def f():\n"
        "    from .sub.b import _inner\n"
        "    return a._secret, bee._inner, sub.b._inner, pkg.a._helper, a.__name__, _inner, _helper\n")
    (pkg / "sub" / "d.py").write_text("from .. import a\nfrom .b import _inner\n\nx = a._secret\n")
    got = sorted(violations(pkg))
    assert got == sorted([
        "pkg/c.py:3: from pkg.a import _helper",
        "pkg/c.py:8: from pkg.sub.b import _inner",
        "pkg/c.py:9: pkg.a._secret",
        "pkg/c.py:9: pkg.sub.b._inner",
        "pkg/c.py:9: pkg.sub.b._inner",
        "pkg/c.py:9: pkg.a._helper",
        "pkg/sub/d.py:2: from pkg.sub.b import _inner",
        "pkg/sub/d.py:4: pkg.a._secret",
    ])
