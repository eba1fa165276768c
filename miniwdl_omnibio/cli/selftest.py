"""An offline equivalent of `miniwdl run_self_test` for any omnibio backend.

miniwdl's own self-test downloads its inputs (https and s3 through containers from ghcr), so it
cannot run without a network. This one exercises the same WDL features with local inputs --
scatter, WDL 1.2 `env` inputs, File and Directory inputs, a memory requirement -- plus the
environment contract and a results.json upload verified by the plugin.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

NAMES = ("Alyssa P. Hacker", "Ben Bitdiddle")

WORKFLOW = r"""
version 1.2

workflow omnibio_selftest {
    input {
        File names
        Directory reference_data
        String image
        String runtime_image
    }

    scatter (name in read_lines(names)) {
        call hello { input: name, reference_data, image }
    }
    call contract { input: names, reference_data, runtime_image }

    output {
        Array[String] messages = hello.message
        Array[Directory] message_directories = hello.message_directory
        Array[Int] reference_file_counts = hello.reference_file_count
        String tool_id = contract.tool_id
        Boolean inputs_in_container = contract.inputs_in_container
        File result = contract.result
    }
}

task hello {
    input {
        env String name
        Directory reference_data
        String image
    }
    env String greeting = "Hello"

    command <<<
        set -euo pipefail
        find "~{reference_data}" -type f > reference_files
        mkdir "$name"
        printf '%s, %s!\n' "$greeting" "$name" | tee "$name/message.txt" >&2
    >>>

    output {
        String message = read_string(name + "/message.txt")
        Directory message_directory = name
        Int reference_file_count = length(read_lines("reference_files"))
    }

    requirements {
        container: image
        memory: "1 GiB"
        omnibio_result_check: "off"  # a plain task: it does not use the tool runtime
    }
}

task contract {
    input {
        File names
        Directory reference_data
        String runtime_image
    }

    command <<<
        set -euo pipefail
        python3 -m miniwdl_omnibio.runtime.echo_test > /dev/null
        printf '%s' "$TOOL_ID" > tool_id
        python3 - <<'PY'
        import json, os
        inputs = json.loads(os.environ["INPUTS_JSON"])
        seen = os.path.isfile(inputs["names"]) and os.path.isdir(inputs["reference_data"])
        open("inputs_in_container", "w").write("true" if seen else "false")
        PY
    >>>

    output {
        String tool_id = read_string("tool_id")
        Boolean inputs_in_container = read_boolean("inputs_in_container")
        File result = "omnibio_result.json"
    }

    requirements {
        container: runtime_image
        memory: "256 MiB"
    }
}
"""


def _prepare(directory: str) -> dict[str, str]:
    with open(os.path.join(directory, "names.txt"), "w") as outfile:
        outfile.write("\n".join(NAMES) + "\n")
    reference = os.path.join(directory, "reference_data")
    os.makedirs(reference, exist_ok=True)
    for name in ("a.txt", "b.txt"):
        with open(os.path.join(reference, name), "w") as outfile:
            outfile.write(name + "\n")
    wdl = os.path.join(directory, "selftest.wdl")
    with open(wdl, "w") as outfile:
        outfile.write(textwrap.dedent(WORKFLOW).lstrip())
    return {"wdl": wdl, "names": os.path.join(directory, "names.txt"), "reference_data": reference}


def _check(outputs: dict) -> list[str]:
    """What is wrong with the outputs (empty when the self-test passed)."""
    problems = []
    expect = {
        "omnibio_selftest.messages": [f"Hello, {name}!" for name in NAMES],
        "omnibio_selftest.reference_file_counts": [2, 2],
        "omnibio_selftest.tool_id": "contract",
        "omnibio_selftest.inputs_in_container": True,
    }
    for key, value in expect.items():
        if outputs.get(key) != value:
            problems.append(f"{key} = {outputs.get(key)!r}, expected {value!r}")
    for name, directory in zip(
        NAMES, outputs.get("omnibio_selftest.message_directories") or [], strict=False
    ):
        with open(os.path.join(directory, "message.txt")) as infile:
            if infile.read().rstrip() != f"Hello, {name}!":
                problems.append(f"message directory {directory} has the wrong message.txt")
    result_path = outputs.get("omnibio_selftest.result")
    if not result_path:
        problems.append("no verified results.json (is [omnibio] result_uri_prefix set?)")
    else:
        with open(result_path) as infile:
            result = json.load(infile)
        if not (result.get("ok") and result.get("tool_id") == "contract" and result.get("run_id")):
            problems.append(f"results.json is not a successful echo_test result: {result}")
    return problems


def run(
    backend: str,
    directory: str | None = None,
    cfg: str | None = None,
    image: str = "ubuntu:22.04",
    runtime_image: str = "omnibio/runtime:latest",
    env: dict[str, str] | None = None,
) -> list[str]:
    """Run the self-test; returns the problems found (empty = passed)."""
    directory = os.path.abspath(directory or tempfile.mkdtemp(prefix="omnibio_selftest_"))
    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o755)
    paths = _prepare(directory)
    run_env = dict(os.environ if env is None else env)
    run_env["MINIWDL__SCHEDULER__CONTAINER_BACKEND"] = backend
    run_env.setdefault(
        "MINIWDL__OMNIBIO__RESULT_URI_PREFIX", "file://" + os.path.join(directory, "results")
    )
    argv = [
        sys.executable,
        "-m",
        "WDL",
        "run",
        paths["wdl"],
        f"names={paths['names']}",
        f"reference_data={paths['reference_data']}",
        f"image={image}",
        f"runtime_image={runtime_image}",
        "--dir",
        directory,
        "--no-cache",
        "--verbose",
        "--error-json",
    ]
    if cfg:
        argv += ["--cfg", cfg]
    proc = subprocess.run(argv, env=run_env, capture_output=True, text=True)
    if proc.returncode != 0:
        return [
            f"miniwdl run failed (exit {proc.returncode}): "
            f"{proc.stdout.strip()[-2000:]}{proc.stderr.strip()[-2000:]}"
        ]
    return _check(json.loads(proc.stdout)["outputs"])
