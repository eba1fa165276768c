"""The scenario suite runs on every backend's rig: the conformance suite's backend fixtures."""

from tests.conformance.conftest import (  # noqa: F401
    conformance_omnibio_awsbatch,
    conformance_omnibio_azurebatch,
    conformance_omnibio_docker,
    conformance_omnibio_slurm,
    conformance_omnibio_tes,
)
