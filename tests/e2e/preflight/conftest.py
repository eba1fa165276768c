"""Running ``python -m miniwdl_omnibio check --cfg <file>`` as a user would, and reading its lines."""

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

# the emulators' fixtures, shared with their backends' own tests
from tests.e2e.awsbatch.conftest import moto, shared  # noqa: F401
from tests.e2e.azurebatch.conftest import azurite, batch, emulator  # noqa: F401
from tests.e2e.slurm.conftest import slurm_rig  # noqa: F401
from tests.e2e.tes.conftest import shared_dir  # noqa: F401


@dataclass
class Checked:
    returncode: int
    stdout: str
    stderr: str

    def line(self, name: str) -> str:
        """The line of check ``name`` ('' if it was not run)."""
        return next((x for x in self.stdout.splitlines() if x[2:].startswith(name + ":")), "")

    def passed(self, name: str) -> bool:
        return self.line(name).startswith("✓")

    def failed(self, name: str, *words: str) -> bool:
        """Check ``name`` failed, and its line has each of ``words``."""
        line = self.line(name)
        return line.startswith("✗") and all(w in line for w in words)


def write_cfg(path: str, config: dict[str, dict[str, str]]) -> str:
    with open(path, "w") as outfile:
        for section, values in config.items():
            outfile.write(f"[{section}]\n")
            outfile.writelines(f"{key} = {value}\n" for key, value in values.items())
    return path


@pytest.fixture
def check(tmp_path):
    """check(config, env=..., args=...) runs the preflight with ``config`` written to a .cfg."""

    def run(config, env=None, args=(), timeout=300) -> Checked:
        cfg = write_cfg(str(tmp_path / "my.cfg"), config)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MINIWDL")}
        proc = subprocess.run(
            [sys.executable, "-m", "miniwdl_omnibio", "check", "--cfg", cfg, *args],
            env={**clean, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = Checked(proc.returncode, proc.stdout, proc.stderr)
        print(result.stdout, result.stderr[-2000:])
        assert (result.returncode == 0) == ("✗" not in result.stdout)
        return result

    return run
