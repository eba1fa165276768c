"""What the contract gains for tools: PATH_MAPPING_RULES (openjd pathmapping-1.0) with
map_path(), the result size limit, and the host-side re-hash of the files results.json names."""

import json
import os

from tests.helpers import run_miniwdl

SHEET_WDL = """
version 1.1
task sheet {
  input { File sheet  Array[File] reads }
  command <<<
    python3 - <<'PY'
import os
from miniwdl_omnibio.runtime import read_contract, write_result
contract = read_contract()
mapped = [contract.map_path(line.strip()) for line in open("~{sheet}") if line.strip()]
write_result({"sizes": [os.path.getsize(path) for path in mapped]})
PY
  >>>
  output { File result = "omnibio_result.json" }
  runtime { container: "~{IMAGE}" }
}
"""


def test_sample_sheet_of_launcher_paths_is_mapped(docker_rig, checkout_image, workdir):
    reads = []
    for index, text in enumerate(["ACGT\n", "ACGTACGT\n"]):
        path = workdir / f"r{index}.fq"
        path.write_text(text)
        reads.append(path)
    sheet = workdir / "sheet.txt"
    sheet.write_text("".join(f"{path}\n" for path in reads))  # launcher paths
    wdl = workdir / "sheet.wdl"
    wdl.write_text(SHEET_WDL.replace("~{IMAGE}", checkout_image))
    run = run_miniwdl(
        str(wdl),
        [f"sheet={sheet}"] + [f"reads={path}" for path in reads],
        str(workdir),
        config={"omnibio": {"result_uri_prefix": f"file://{workdir}/results"}},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with open(run.outputs["sheet.result"]) as infile:
        assert json.load(infile)["results"]["sizes"] == [5, 9]


TAMPER_WDL = """
version 1.1
task tamper {
  command <<<
    echo ACGT > out.txt
    python3 -c 'import os; from miniwdl_omnibio.runtime import write_result; write_result({"out": os.path.abspath("out.txt")})'
    echo TTTT > out.txt
  >>>
  runtime { container: "~{IMAGE}" }
}
"""


def test_file_changed_after_the_manifest_fails_the_task(docker_rig, checkout_image, workdir):
    wdl = workdir / "tamper.wdl"
    wdl.write_text(TAMPER_WDL.replace("~{IMAGE}", checkout_image))
    run = run_miniwdl(
        str(wdl),
        [],
        str(workdir),
        config={"omnibio": {"result_uri_prefix": f"file://{workdir}/results"}},
    )
    assert run.returncode != 0
    assert "out.txt does not match its sha256" in run.stderr


BIG_WDL = """
version 1.1
task big {
  command <<<
    python3 -c 'from miniwdl_omnibio.runtime import write_result; write_result({"x": "y" * 5000})'
  >>>
  runtime { container: "~{IMAGE}" }
}
"""


def _big(workdir, image, config):
    wdl = workdir / "big.wdl"
    wdl.write_text(BIG_WDL.replace("~{IMAGE}", image))
    omnibio = {"result_uri_prefix": f"file://{workdir}/results", **config}
    return run_miniwdl(str(wdl), [], str(workdir), config={"omnibio": omnibio})


def test_result_max_bytes_from_the_config(docker_rig, checkout_image, workdir):
    run = _big(workdir, checkout_image, {"result_max_bytes": "4 KiB"})
    assert run.returncode != 0
    assert "above the limit of 4096 ([omnibio] result_max_bytes); not uploaded" in run.stderr


def test_result_within_the_default_limit(docker_rig, checkout_image, workdir):
    assert _big(workdir, checkout_image, {}).returncode == 0


SECRET_WDL = """
version 1.1
task keyed {
  command <<<
    test "$OMNIBIO_TEST_TOKEN" = "tok-1234-secret" && python3 -c 'from miniwdl_omnibio.runtime import write_result; write_result({"used": True})'
  >>>
  runtime { container: "~{IMAGE}" omnibio_secrets: ["OMNIBIO_TEST_TOKEN"] }
}
"""


def _all_logs(run_dir: str) -> str:
    text = []
    for current, _dirs, files in os.walk(run_dir):
        for name in files:
            if name.endswith((".log", ".json", ".txt")):
                with open(os.path.join(current, name), errors="replace") as infile:
                    text.append(infile.read())
    return "\n".join(text)


def test_secrets_and_the_signing_key_reach_the_task_and_no_log(docker_rig, checkout_image, workdir):
    wdl = workdir / "keyed.wdl"
    wdl.write_text(SECRET_WDL.replace("~{IMAGE}", checkout_image))
    config = {"omnibio": {"result_uri_prefix": f"file://{workdir}/results"}}
    env = {"OMNIBIO_TEST_TOKEN": "tok-1234-secret", "OMNIBIO_RESULT_SIGNING_KEY": "sign-5678-key"}
    run = run_miniwdl(str(wdl), [], str(workdir), config=config, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(os.path.join(run.dir, "work", "omnibio_result.json")) as infile:
        assert "signature" in json.dumps(json.load(infile))  # signed in the task, checked here
    said = _all_logs(run.dir) + run.stderr
    assert "tok-1234-secret" not in said and "sign-5678-key" not in said


def test_a_secret_the_launcher_lacks_is_one_line(docker_rig, checkout_image, workdir):
    wdl = workdir / "keyed.wdl"
    wdl.write_text(SECRET_WDL.replace("~{IMAGE}", checkout_image))
    assert "OMNIBIO_TEST_TOKEN" not in os.environ
    run = run_miniwdl(str(wdl), [], str(workdir))
    assert run.returncode != 0
    assert "runtime.omnibio_secrets names OMNIBIO_TEST_TOKEN" in json.dumps(run.error_json())
