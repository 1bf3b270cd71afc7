"""The ML code stays usable from a notebook: no Django imports in the pure packages."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = ["training", "generation", "curation/ml"]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", PURE)
def test_pure_ml_packages_do_not_import_django(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    for path in files:
        offending = {m for m in imported_modules(path) if m == "django" or m.startswith(("django.", "curation.models"))}
        assert not offending, f"{path.relative_to(ROOT)} imports {offending}"
