"""The plugin's wheel leaves upstream's import name alone; the compat wheel carries it.

omnibioai-tool-runtime owns the top-level ``omni_tool_runtime`` package: a plugin wheel holding
one too would overwrite it (or be overwritten) when both are installed.
"""

import re
import shutil
import subprocess
import sys
import zipfile

import pytest

import miniwdl_omnibio
from tests.helpers import REPO


def _wheel(source: str, into) -> zipfile.ZipFile:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(into), source],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = into.glob("*.whl")
    return zipfile.ZipFile(wheel)


def _top_levels(wheel: zipfile.ZipFile) -> set[str]:
    return {
        name.split("/")[0]
        for name in wheel.namelist()
        if not name.split("/")[0].endswith(".dist-info")
    }


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """Built from a copy without build artefacts: a checkout's stale build/ (from an earlier
    layout) would otherwise leak files the sources no longer ship into the wheel."""
    source = tmp_path_factory.mktemp("source") / "repo"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".venv", "examples"
        ),
    )
    return (
        _wheel(str(source), tmp_path_factory.mktemp("plugin")),
        _wheel(f"{source}/compat", tmp_path_factory.mktemp("compat")),
    )


def test_the_plugin_wheel_holds_no_omni_tool_runtime(wheels):
    plugin, _ = wheels
    assert _top_levels(plugin) == {"miniwdl_omnibio"}
    entry_points = plugin.read(
        f"miniwdl_omnibio-{miniwdl_omnibio.__version__}.dist-info/entry_points.txt"
    )
    assert b"omni_tool_runtime" not in entry_points


def test_the_compat_wheel_holds_only_omni_tool_runtime_and_its_script(wheels):
    _, compat = wheels
    assert _top_levels(compat) == {"omni_tool_runtime"}
    info = f"miniwdl_omnibio_compat-{miniwdl_omnibio.__version__}.dist-info"
    assert b"omni-tool-runtime = omni_tool_runtime.run:main" in compat.read(
        f"{info}/entry_points.txt"
    )
    metadata = compat.read(f"{info}/METADATA").decode()
    assert f"Requires-Dist: miniwdl-omnibio=={miniwdl_omnibio.__version__}" in metadata


def test_the_version_has_one_source():
    """setup.py reads miniwdl_omnibio.__version__; nothing else in the metadata spells it."""
    with open(f"{REPO}/setup.py", encoding="utf-8") as infile:
        setup = infile.read()
    with open(f"{REPO}/pyproject.toml", encoding="utf-8") as infile:
        pyproject = infile.read()
    assert "[project]" not in pyproject
    assert not re.search(r"(?<!\w)version\s*=\s*['\"]\d", setup + pyproject)
