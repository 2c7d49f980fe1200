"""The version has one source, `.claude-plugin/plugin.json`; pyproject.toml's copy (pip needs a literal)
must equal it, and no other shipped file names one."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (".claude-plugin", "worker", "skills", "commands", "agents", "workflow.md", "main.py", "install.sh")


def version_problems(root: Path) -> list[str]:
    """What is wrong with the version under `root`; [] when plugin.json is its only source."""
    source = json.loads((root / ".claude-plugin" / "plugin.json").read_text(encoding="utf-8")).get("version")
    if not isinstance(source, str) or not source:
        return ["plugin.json has no version string"]
    problems = []
    packaged = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"].get("version")
    if packaged != source:
        problems.append(f"pyproject.toml says {packaged!r}, plugin.json says {source!r}")
    literal = re.compile(rf"""["']{re.escape(source)}["']""")
    for top in SHIPPED:
        for path in [root / top] if (root / top).is_file() else sorted((root / top).rglob("*")):
            if path.name == "plugin.json" or path.suffix not in {".py", ".json", ".md", ".sh"}:
                continue
            if path.is_file() and literal.search(path.read_text(encoding="utf-8", errors="replace")):
                problems.append(f"{path.relative_to(root)} writes the version {source} itself")
    return problems


def test_plugin_json_is_the_only_source_of_the_version():
    assert all((REPO / top).exists() for top in SHIPPED)  # the scan looks where the files are
    assert version_problems(REPO) == []


def copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / ".claude-plugin", root / ".claude-plugin")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "worker").mkdir()
    return root


def test_a_pyproject_version_that_differs_from_plugin_json_is_found(tmp_path):
    root = copy(tmp_path)
    manifest = root / ".claude-plugin" / "plugin.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": "9.9.9"}))
    assert [p for p in version_problems(root) if p.startswith("pyproject.toml says")]


def test_a_second_copy_of_the_version_is_found(tmp_path):
    root = copy(tmp_path)
    version = json.loads((root / ".claude-plugin" / "plugin.json").read_text())["version"]
    (root / "worker" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    market = root / ".claude-plugin" / "marketplace.json"
    data = json.loads(market.read_text())
    data["plugins"][0]["version"] = version
    market.write_text(json.dumps(data))
    assert version_problems(root) == [
        f".claude-plugin/marketplace.json writes the version {version} itself",
        f"worker/__init__.py writes the version {version} itself",
    ]
