"""omnibio_tes staging mode without a server: which mounts become inputs and outputs, the
command around the task's, and where miniwdl's download cache says a file came from."""

import logging
from dataclasses import replace

import pytest
from WDL.runtime.cache import CallCache
from WDL.runtime.config import Loader

from miniwdl_omnibio.attempt import Mount, Resources, TaskAttempt
from miniwdl_omnibio.engines.base import Phase, Status, Submitted
from miniwdl_omnibio.engines.tes.staging import Stager, cached_url, plan
from miniwdl_omnibio.engines.tes.translate import staged_command, staged_outputs
from miniwdl_omnibio.runtime.store import AzureBlobStore, ObjectStore, S3Store, open_store
from tests.unit.test_tes_translation import _engine

HOST = "/runs/wf/call-x"
CONTAINER = "/mnt/miniwdl_task_container"


class Named(ObjectStore):
    """Only the naming part of a store (no SDK, no I/O)."""

    scheme = "s3"
    prefix = "staging"

    def url(self, key):
        return f"s3://bucket/{key}"

    def key_of(self, url):
        return url[len("s3://bucket/") :] if url.startswith("s3://bucket/") else None

    size = put = put_bytes = get = get_bytes = keys = delete = None


def _attempt():
    return TaskAttempt(
        run_id="wf.call-x.2",
        call="call-x",
        workflow_run="wf",
        attempt=2,
        image="ubuntu:22.04",
        argv=("/bin/sh", "-c", "sh command >> stdout2.txt"),
        workdir=f"{CONTAINER}/work",
        env={},
        mounts=(
            Mount("/data/ref.fa", f"{CONTAINER}/work/_miniwdl_inputs/0/ref.fa", True),
            Mount(f"{HOST}/command", f"{CONTAINER}/command", True),
            Mount(f"{HOST}/stdout2.txt", f"{CONTAINER}/stdout2.txt", False),
            Mount(f"{HOST}/stderr2.txt", f"{CONTAINER}/stderr2.txt", False),
            Mount(f"{HOST}/work2", f"{CONTAINER}/work", False),
            Mount("/results/wf/call-x", "/results/wf/call-x", False),
        ),
        resources=Resources(1, 0, 0, 0, None, None, 0),
        tags={},
        stdout_path=f"{HOST}/stdout2.txt",
        stderr_path=f"{HOST}/stderr2.txt",
        host_dir=HOST,
    )


def test_plan_inputs_command_and_outputs():
    attempt, store = _attempt(), Named()
    staged = plan(attempt, store, "wf.l4")
    assert staged == plan(attempt, store, "wf.l4")  # pure
    assert [m.host_path for m in staged.inputs] == ["/data/ref.fa"]
    assert staged.command.container_path == f"{CONTAINER}/command"
    assert staged.attempt_key == "staging/wf.l4/attempts/wf.call-x.2"
    assert [(o.container_path, o.key.rsplit("/", 1)[1], o.directory) for o in staged.outputs] == [
        (f"{CONTAINER}/stdout2.txt", "stdout2.txt", False),
        (f"{CONTAINER}/stderr2.txt", "stderr2.txt", False),
        (f"{CONTAINER}/work", "work", True),
        ("/results/wf/call-x", "dir3", True),
    ]
    outputs = [o.as_dict() for o in staged_outputs(staged, store)]
    assert outputs[2] == {
        "url": "s3://bucket/staging/wf.l4/attempts/wf.call-x.2/work",
        "path": f"{CONTAINER}/work",
        "type": "DIRECTORY",
        "name": "work",
    }


def test_the_command_keeps_its_exit_code_and_repeats_stderr():
    attempt = _attempt()
    shell, flag, script = staged_command(attempt, plan(attempt, Named(), "wf.l4"))
    assert (shell, flag) == ("/bin/sh", "-c")
    assert script.startswith(
        f"mkdir -p /mnt/miniwdl_task_container {CONTAINER}/work /results/wf/call-x 2>/dev/null; "
        "(/bin/sh -c 'sh command >> stdout2.txt'); rc=$?; "
    )
    assert f"rm -rf {CONTAINER}/work/_miniwdl_inputs" in script
    assert f"tail -c 65536 {CONTAINER}/stderr2.txt >&2" in script and script.endswith("exit $rc")


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/ref/data.txt",
        "s3://bucket/data.txt",
        "s3://bucket/a_b/c__d/e.txt",
        "https://acct.blob.core.windows.net/container/deep/path/x.bam",
    ],
)
def test_cached_url_reads_miniwdls_download_cache_layout(tmp_path, uri):
    cfg = Loader(
        logging.getLogger("test"),
        filenames=[],
        overrides={"download_cache": {"dir": str(tmp_path), "get": "true"}},
    )
    path = CallCache(cfg, logging.getLogger("test")).download_path(uri)
    assert path and cached_url(path, str(tmp_path)) == uri
    assert cached_url("/elsewhere/x.txt", str(tmp_path)) is None


def test_staging_uris(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = open_store("s3://bucket/some/prefix/")
    assert isinstance(s3, S3Store) and s3.prefix == "some/prefix"
    assert s3.url(s3.key("a", "b")) == "s3://bucket/some/prefix/a/b"
    assert s3.key_of("s3://bucket/x/y") == "x/y" and s3.key_of("s3://other/x") is None
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
    )
    blob = open_store("https://acct.blob.core.windows.net/container/pre")
    assert isinstance(blob, AzureBlobStore) and (blob.container, blob.prefix) == (
        "container",
        "pre",
    )
    assert blob.url("pre/a b") == "https://acct.blob.core.windows.net/container/pre/a%20b"
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        "AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1",
    )
    emulator = open_store("http://127.0.0.1:10000/devstoreaccount1/container")
    assert emulator.url("k") == "http://127.0.0.1:10000/devstoreaccount1/container/k"
    for bad, why in [
        ("ftp://x/y", "neither s3"),
        ("s3:///prefix", "names no bucket"),
        ("https://acct.blob.core.windows.net/", "names no blob container"),
        ("https://acct.blob.core.windows.net/c/p?sv=secret", "no SAS tokens"),
    ]:
        with pytest.raises(ValueError, match=why):
            open_store(bad)


class Kept(Named):
    """A store that keeps objects in memory: what collect downloads, what release removes."""

    def __init__(self, objects):
        self.objects = dict(objects)

    def get(self, key, path):
        if key not in self.objects:
            raise FileNotFoundError(key)
        with open(path, "w") as outfile:
            outfile.write(self.objects[key])

    def keys(self, prefix):
        return iter([k for k in self.objects if k.startswith(prefix + "/")])

    def delete_below(self, prefix):
        self.objects = {k: v for k, v in self.objects.items() if not k.startswith(prefix + "/")}


def test_collect_and_release_read_the_attempts_plan_from_its_record(monkeypatch, tmp_path):
    """The engine keeps nothing per task: the record's request says what to download and
    which objects to remove."""
    attempt = replace(
        _attempt(),
        mounts=(Mount(str(tmp_path / "stderr2.txt"), f"{CONTAINER}/stderr2.txt", False),),
        stdout_path=str(tmp_path / "stdout2.txt"),
        stderr_path=str(tmp_path / "stderr2.txt"),
        host_dir=str(tmp_path),
    )
    engine = _engine(monkeypatch)
    engine.stager = Stager(Kept({}), None)
    request = engine.translate(attempt)
    key = request.staging.outputs[0].key
    engine.stager.store.objects = {key: "oops\n", "staging/other/x": ""}
    record = Submitted("t1", attempt, logging.getLogger("test"), 0.0, request)
    engine.collect(record, Status(Phase.DONE, exit_code=1), record.logger)
    assert (tmp_path / "stderr2.txt").read_text() == "oops\n"
    engine.release(record, record.logger)
    assert engine.stager.store.objects == {"staging/other/x": ""}
