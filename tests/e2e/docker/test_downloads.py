"""miniwdl's URI downloads (what `miniwdl run_self_test` needs a network for) run as tasks
through omnibio_docker: here from a web server on 127.0.0.1, with a local stand-in for
miniwdl's aria2c tools image."""

import functools
import http.server
import io
import json
import threading

import docker
import pytest

from tests.helpers import run_miniwdl

pytestmark = pytest.mark.usefixtures("docker_rig")

FAKE_ARIA2C = "omnibio/test-aria2c:latest"
DOCKERFILE = r"""
FROM omnibio/base:bookworm
RUN printf '%s\n' '#!/usr/bin/python3' 'import os, sys, urllib.request' \
      'url = sys.argv[-1]' 'urllib.request.urlretrieve(url, os.path.basename(url))' \
      > /usr/local/bin/aria2c && chmod 755 /usr/local/bin/aria2c
"""
WDL = """
version 1.1
task count {
  input { File names }
  command <<< python3 -m miniwdl_omnibio.runtime.echo_test > /dev/null; wc -l < ~{names} >>>
  output { Int lines = read_int(stdout()) }
  runtime { docker: "omnibio/runtime:latest" }
}
"""


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    (root / "names.txt").write_text("Alyssa P. Hacker\nBen Bitdiddle\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_uri_input_is_downloaded_by_a_task_on_this_backend(web, workdir):
    docker.from_env().images.build(
        fileobj=io.BytesIO(DOCKERFILE.encode()), tag=FAKE_ARIA2C, rm=True
    )
    wdl = workdir / "count.wdl"
    wdl.write_text(WDL)
    run = run_miniwdl(
        str(wdl),
        [f"names={web}/names.txt", "--no-cache"],
        str(workdir),
        config={
            "download_aria2c": {"docker": FAKE_ARIA2C},
            "omnibio_docker": {"network": "host"},  # the download container reaches 127.0.0.1
            "omnibio": {"result_uri_prefix": f"file://{workdir}/results"},  # checked for count only
        },
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["count.lines"] == 2
    assert "download-" in run.stderr and "omnibio attempt" in run.stderr
    (result,) = (workdir / "results").glob("*/count/results.json")
    assert json.loads(result.read_text())["ok"]
