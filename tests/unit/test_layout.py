"""The layout document (DESIGN.md) and the code agree, and the house rules hold."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "fmnist"
DESIGN = (ROOT / "DESIGN.md").read_text(encoding="utf-8")


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_the_layout_document():
    table = set(re.findall(r"^\| `([\w/]+(?:\.py)?)` \|", DESIGN, flags=re.M))
    missing = []
    for path in modules():
        rel = path.relative_to(PACKAGE)
        listed = str(rel) in table or (len(rel.parts) > 1 and f"{rel.parts[0]}/" in table)
        if not listed:
            missing.append(str(rel))
    assert not missing, f"modules missing from DESIGN.md's table: {missing}"
    for name in table:  # and nothing listed that is gone
        assert (PACKAGE / name).exists(), f"DESIGN.md lists {name}, which does not exist"


def test_the_reading_path_is_under_2000_lines_and_stated():
    line = re.search(r"^`config\.py` → .*?: ([\d,]+) lines", DESIGN, flags=re.M | re.S)
    assert line, "DESIGN.md names the reading path and its length"
    path = re.findall(r"`([\w/]+\.py)`", line.group(0))
    total = sum(len((PACKAGE / p).read_text().splitlines()) for p in path)
    assert total == int(line.group(1).replace(",", "")), f"the path is {total} lines now"
    assert total < 2000


def test_modules_and_functions_stay_small():
    too_long = []
    for path in modules():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 400:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    too_long.append(f"{path.name}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, too_long


def _top_level_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it is loaded: fmnist's as paths, others by name."""
    found: set[str] = set()
    body = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while body:  # module level, including under if/try; not inside functions
        node = body.pop()
        if isinstance(node, ast.If | ast.Try):
            body += node.body + node.orelse + getattr(node, "finalbody", [])
            body += [s for h in getattr(node, "handlers", []) for s in h.body]
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = path.parents[node.level - 1]
            parts = node.module.split(".") if node.module else []
            found |= _files_loaded(base, parts)
            for alias in node.names:  # `from .pkg import mod` loads pkg/mod.py too
                found |= _files_loaded(base, [*parts, alias.name])
    return found


def _files_loaded(base: Path, parts: list[str]) -> set[str]:
    """The files that importing ``parts`` below the package ``base`` runs: each package's
    __init__.py on the way, then the module itself."""
    candidates = [base / "__init__.py"]
    for i in range(1, len(parts) + 1):
        target = base.joinpath(*parts[:i])
        candidates += [target / "__init__.py", target.with_suffix(".py")]
    return {str(c) for c in candidates if c.exists()}


def _loads_torch(path: Path, seen: set[str] | None = None) -> bool:
    seen = set() if seen is None else seen
    if str(path) in seen:
        return False
    seen.add(str(path))
    imports = _top_level_imports(path)
    if "torch" in imports:
        return True
    return any(_loads_torch(Path(m), seen) for m in imports if m.endswith(".py"))


def test_modules_marked_without_torch_load_none():
    rows = re.findall(r"^\| `([\w/]+(?:\.py)?)` \|.*\| (\w+) \|$", DESIGN, flags=re.M)
    without = [name for name, torch_col in rows if torch_col == "no"]
    assert len(without) > 10, "DESIGN.md's table has a torch? column"
    loads = []
    for name in without:
        paths = sorted((PACKAGE / name).rglob("*.py")) if name.endswith("/") else [PACKAGE / name]
        loads += [str(p.relative_to(PACKAGE)) for p in paths if _loads_torch(p)]
    assert not loads, f"DESIGN.md says no torch, but these import it when loaded: {loads}"
