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
