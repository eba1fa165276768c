"""What the contract gains for tools: PATH_MAPPING_RULES (openjd pathmapping-1.0) with
map_path(), the result size limit, and the host-side re-hash of the files results.json names.

The tests marked ``needs_wiring`` depend on container.py passing path_mapping= / to_host= /
max_bytes= (see docs/runtime.md); they are strict xfails until then, so wiring shows up as XPASS
and the marker must be removed with it.
"""

import json

import pytest

from tests.helpers import run_miniwdl

needs_wiring = pytest.mark.xfail(
    strict=True, reason="container.py does not pass path_mapping / to_host / max_bytes yet"
)

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


@needs_wiring
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


@needs_wiring
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


@needs_wiring
def test_result_max_bytes_from_the_config(docker_rig, checkout_image, workdir):
    run = _big(workdir, checkout_image, {"result_max_bytes": "4 KiB"})
    assert run.returncode != 0
    assert "above the limit of 4096 ([omnibio] result_max_bytes); not uploaded" in run.stderr


def test_result_within_the_default_limit(docker_rig, checkout_image, workdir):
    assert _big(workdir, checkout_image, {}).returncode == 0
