"""The README's first command, on a rig already set up: it only runs the example, in seconds."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.usefixtures("docker_rig")

EXAMPLE = os.path.join(REPO, "examples", "quickstart")


def test_run_example_prints_verified_results_under_the_example_directory():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIWDL")}
    env["VIRTUAL_ENV"] = os.path.dirname(os.path.dirname(sys.executable))
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "examples", "run-example.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "package: already installed in the active virtual environment" in proc.stderr
    run_dir = re.search(r"^run directory: (.+)$", proc.stdout, re.M).group(1)
    try:
        assert os.path.dirname(run_dir) == os.path.join(EXAMPLE, "runs")
        uploads = re.findall(r"^  at (.+/results\.json)$", proc.stdout, re.M)
        assert len(uploads) == 2
        for path in uploads:
            assert path.startswith(os.path.join(EXAMPLE, "results", os.path.basename(run_dir)))
            with open(path) as infile:
                document = json.load(infile)
            assert document["ok"] is True
            assert json.dumps(document["results"]) in proc.stdout
        assert "Hello, Ben Bitdiddle!" in proc.stdout
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(os.path.join(EXAMPLE, "results", os.path.basename(run_dir)), True)
