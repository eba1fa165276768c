"""omnibio_tes staging through Azure Blob Storage URLs (Azurite), as TES on Azure reads and
writes its storage accounts."""

import os

from azure.storage.blob import ContainerClient

from tests.e2e.tes.runs import read, run, run_tasks, write
from tests.e2e.tes.support import tes_config
from tests.emulators.tes_server import TesServer

COUNT = """
version 1.2
task count {
  input { File data  Directory folder }
  command <<< cat '~{data}'; ls '~{folder}' | wc -l >>>
  output { Array[String] said = read_lines(stdout()) }
  runtime { docker: "ubuntu:22.04" }
}
"""


def test_staging_through_azure_blob_urls(moto, azurite, rundir):
    data = write(rundir, "data.txt", "from azure\n")
    folder = os.path.join(rundir, "folder")
    os.makedirs(folder)
    for name in ("a", "b", "c"):
        write(folder, name, name)
    staging = f"{azurite.blob_endpoint}/staging/tes"
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    with TesServer(azure_connection_string=azurite.connection_string, workers=1) as server:
        config = tes_config(server.url, staging_uri=staging)
        done = run(server, moto, rundir, COUNT, [f"data={data}", f"folder={folder}"], env, config)
        assert done.returncode == 0, done.stderr[-3000:]
        (task,) = run_tasks(server, done.dir)
    assert done.outputs["count.said"] == ["from azure", "3"]
    assert "from azure" in read(os.path.join(done.dir, "stdout.txt"))
    urls = [i["url"] for i in task["inputs"] if "url" in i] + [o["url"] for o in task["outputs"]]
    assert urls and all(u.startswith(staging + "/") for u in urls)
    container = ContainerClient.from_connection_string(azurite.connection_string, "staging")
    assert not list(container.list_blobs(name_starts_with="tes/"))  # removed at exit
