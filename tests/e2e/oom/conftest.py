"""Real out-of-memory kills: docker's fixtures come from tests/conftest.py, the Slurm rig's from
its own e2e conftest."""

from tests.e2e.slurm.conftest import rundir, shared_dir, slurm_rig  # noqa: F401
