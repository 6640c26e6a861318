"""The layering rules of ARCHITECTURE.md that import-linter cannot express, and start-up cost."""

import ast
import subprocess
import sys
from pathlib import Path

import emotionclip

PACKAGE = Path(emotionclip.__file__).parent
STAGES = ("prepare", "train", "evaluate", "analyze")


def _is_submodule(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def _front_imports(path: Path) -> list[str]:
    """``import emotionclip`` / ``from emotionclip import X`` / ``from .. import X`` (the package front)."""
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(PACKAGE).parts) - 1  # package levels below emotionclip/
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "emotionclip" for a in node.names):
            found.append(f"{path.name}:{node.lineno} import emotionclip")
        if isinstance(node, ast.ImportFrom):
            absolute_front = node.level == 0 and node.module == "emotionclip"
            relative_front = (
                node.level == depth + 1
                and node.module is None
                and any(not _is_submodule(a.name) for a in node.names)
            )
            if absolute_front or relative_front:
                found.append(
                    f"{path.name}:{node.lineno} from {'.' * node.level}{node.module or ''} import ..."
                )
    return found


def test_stages_do_not_import_the_package_front():
    offenders = [
        hit for stage in STAGES for f in (PACKAGE / stage).rglob("*.py") for hit in _front_imports(f)
    ]
    assert offenders == []


def test_front_check_sees_a_front_import(tmp_path, monkeypatch):
    bad = PACKAGE / "train" / "_probe_front_import.py"
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    try:
        bad.write_text("from .. import load_model\nimport emotionclip\n")
        assert len(_front_imports(bad)) == 2
    finally:
        bad.unlink()


def _fresh_python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout.strip()


def test_import_and_cli_help_do_not_load_open_clip():
    code = (
        "import sys, emotionclip, emotionclip.cli as c\n"
        "p = c.build_parser()\n"
        "print(sorted(m for m in ('open_clip', 'torchvision', 'transformers', 'torch') if m in sys.modules))"
    )
    assert _fresh_python(code) == "[]"
