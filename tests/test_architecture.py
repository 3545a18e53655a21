"""The package's architecture: layers, no upward imports, no cycles (import-linter, pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> list[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("lint-imports is missing: install the dev extras (pip install -e '.[dev]')")
    return [exe, "--no-cache"]


def test_import_contracts_are_kept():
    done = subprocess.run(_lint_imports(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_python_module_is_over_the_size_limit():
    """About 500 lines per module at most."""
    sizes = {p.relative_to(ROOT): len(p.read_text(encoding="utf-8").splitlines())
             for p in (ROOT / "python" / "dycl").rglob("*.py")}
    too_long = {str(p): n for p, n in sizes.items() if n > 530}
    assert not too_long, too_long


#: A longer function says why in a comment starting with ``# long:`` (argparse builders excepted).
MAX_FUNCTION_LINES = 85


def _long_python_functions() -> list[str]:
    import ast

    found = []
    for path in sorted((ROOT / "python" / "dycl").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.endswith("_parser"):
                continue
            body = lines[node.lineno - 1:node.end_lineno]
            explained = any(line.strip().startswith("# long:") for line in body)
            if len(body) > MAX_FUNCTION_LINES and not explained:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({len(body)} lines)")
    return found


def _long_rust_functions() -> list[str]:
    """Functions of rustfmt-formatted sources: from ``fn name(`` to the ``}`` at the same indentation."""
    import re

    found = []
    for path in sorted((ROOT / "crates").rglob("*.rs")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:unsafe\s+)?fn\s+(\w+)", line)
            if not match or line.rstrip().endswith(";") or (i and lines[i - 1].strip() == "#[test]"):
                continue  # declarations and unit tests (a test may spell out many cases)
            indent, name = match.group(1), match.group(2)
            end = next((j for j in range(i + 1, len(lines)) if lines[j] == f"{indent}}}"), None)
            if end is None:
                continue
            body = lines[i:end + 1]
            if len(body) > MAX_FUNCTION_LINES and not any(b.strip().startswith("// long:") for b in body):
                found.append(f"{path.relative_to(ROOT)}:{i + 1} {name} ({len(body)} lines)")
    return found


def test_long_functions_say_why():
    long = _long_python_functions() + _long_rust_functions()
    assert not long, "\n".join(long)
