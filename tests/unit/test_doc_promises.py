"""Promises of README.md and docs/runtime.md that need no service: what `pip install` brings
(Python, miniwdl, the extras), a missing cloud SDK named in one line, and CI=true turning a
missing rig part into a failure. (The docs' key tables: test_config_keys.py.)"""

import ast
import os
import re

import pytest

from miniwdl_omnibio.runtime import store
from tests.helpers import REPO


def _setup_keywords() -> dict:
    with open(os.path.join(REPO, "setup.py")) as infile:
        tree = ast.parse(infile.read())
    (call,) = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"
    ]
    found = {}
    for keyword in call.keywords:
        try:
            found[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            continue  # computed (the long description)
    return found


def test_install_brings_what_the_readme_says():
    """README "Install": Python >= 3.10, miniwdl >= 1.16, < 2; [aws] boto3, [azure] azure-batch
    15.x, azure-identity and azure-storage-blob, [tes] py-tes; the five backends as plugins."""
    setup = _setup_keywords()
    assert setup["python_requires"] == ">=3.10"
    assert "miniwdl>=1.16,<2" in setup["install_requires"]
    names = {
        extra: {re.split(r"[<>=\[]", r)[0] for r in requirements}
        for extra, requirements in setup["extras_require"].items()
    }
    assert names["aws"] == {"boto3"}
    assert names["azure"] == {"azure-batch", "azure-identity", "azure-storage-blob"}
    assert "azure-batch>=15,<16" in setup["extras_require"]["azure"]
    assert names["tes"] == {"py-tes"}
    backends = setup["entry_points"]["miniwdl.plugin.container_backend"]
    assert sorted(b.split(" = ")[0] for b in backends) == [
        "omnibio_awsbatch",
        "omnibio_azurebatch",
        "omnibio_docker",
        "omnibio_slurm",
        "omnibio_tes",
    ]


@pytest.mark.parametrize(
    "module,package",
    [
        ("boto3", "boto3"),
        ("azure.storage.blob", "azure-storage-blob"),
        ("azure.identity", "azure-identity"),
        ("google.cloud.storage", "google-cloud-storage"),
    ],
)
def test_a_missing_sdk_is_one_line_naming_the_pip_package(monkeypatch, module, package):
    """docs/runtime.md: "A missing SDK fails with one line naming the pip package"."""

    def absent(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(store.importlib, "import_module", absent)
    with pytest.raises(RuntimeError) as raised:
        store.import_sdk(module)
    message = str(raised.value)
    assert message.startswith(f"{package} not installed: pip install '{package}'")
    assert "\n" not in message


def test_under_ci_a_missing_rig_part_fails_instead_of_skipping(monkeypatch):
    """README: under CI=true an end-to-end test whose engine or emulator is missing fails."""
    from tests import conftest

    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true but dockerd is not answering"):
        conftest.require(False, "dockerd is not answering")
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception):
        conftest.require(False, "dockerd is not answering")
    conftest.require(True, "present")  # nothing happens
