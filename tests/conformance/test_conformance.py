"""Every WDL spec example that miniwdl's docker_swarm backend passes must pass on each backend.

The reference is baseline_docker_swarm.json (regenerate it as docs/conformance.md says). For an
expected-failure example the backend must also fail the same way (error class and exit status),
so a backend that fails every task cannot pass those for the wrong reason. The examples that never
reach a container backend (no task: miniwdl evaluates them itself) run on omnibio_docker only.
"""

import os
import time

import pytest

from tests.conformance.runner import (
    Workspace,
    all_examples,
    backend_env,
    load_baseline,
    reaches_backend,
    regressions,
    run_examples,
    summary,
    write_results,
)
from tests.conftest import require
from tests.helpers import CONFORMANCE

BASELINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baseline_docker_swarm.json")
# backend -> the session fixture (tests/conformance/backends.py) yielding (env, run_root)
BACKEND_FIXTURES = {
    "omnibio_docker": "conformance_omnibio_docker",
    "omnibio_awsbatch": "conformance_omnibio_awsbatch",
    "omnibio_azurebatch": "conformance_omnibio_azurebatch",
    "omnibio_tes": "conformance_omnibio_tes",
    "omnibio_slurm": "conformance_omnibio_slurm",
}
# the backend that runs every example; the others run those that reach a container backend
EVERY_EXAMPLE_ON = "omnibio_docker"
JOBS = int(os.environ.get("OMNIBIO_CONFORMANCE_JOBS", "4"))
TIMEOUT = float(os.environ.get("OMNIBIO_CONFORMANCE_TIMEOUT", "180"))


@pytest.mark.parametrize("backend", sorted(BACKEND_FIXTURES))
def test_spec_examples_pass_like_docker_swarm(backend, request):
    require(os.path.isdir(CONFORMANCE), f"no WDL spec examples at {CONFORMANCE}")
    env, run_root = request.getfixturevalue(BACKEND_FIXTURES[backend])
    baseline = load_baseline(BASELINE)
    specs, examples = all_examples(CONFORMANCE)
    wanted = set(baseline["passing"])
    examples = [
        e
        for e in examples
        if e.id in wanted and (backend == EVERY_EXAMPLE_ON or reaches_backend(e))
    ]
    workspace = Workspace.create(os.path.join(run_root, "conformance"), specs)

    started = time.monotonic()
    results = run_examples(examples, workspace, backend_env(backend, env), JOBS, TIMEOUT)
    seconds = time.monotonic() - started
    print(summary(backend, results, seconds, JOBS))
    write_results(
        os.path.join(workspace.root, f"results-{backend}.json"), backend, results, seconds, JOBS
    )

    # elsewhere only the examples run are checked; omnibio_docker reports every baseline id
    lost = regressions(
        baseline, results, None if backend == EVERY_EXAMPLE_ON else {e.id for e in examples}
    )
    assert not lost, (
        f"{len(lost)} of {len(examples)} examples that pass on docker_swarm (miniwdl {baseline['miniwdl_version']}) "
        f"do not pass on {backend}:\n"
        + "\n".join(f"  {r.id}: {r.outcome}: {r.reason[:300]} ({r.run_dir})" for r in lost)
    )
