"""The preflight on omnibio_awsbatch against moto server (jobs on the local dockerd, results in
moto S3, a temporary directory as the shared filesystem)."""

import pytest

from tests.e2e.awsbatch.conftest import batch_config

START = "omnibio_awsbatch start (endpoint, credentials, job queues)"


def aws(moto, shared, **keys):
    config = batch_config(moto, shared, **keys)
    config["scheduler"]["container_backend"] = "omnibio_awsbatch"
    return config


def test_everything_passes(check, moto, shared):
    checked = check(aws(moto, shared), env=moto.server.env())
    assert checked.returncode == 0
    for name in (START, "shared filesystem on this host", "shared filesystem from a task"):
        assert checked.passed(name)
    assert checked.passed("result prefix writable from a task")
    assert checked.passed("result prefix readable from this host")


@pytest.mark.parametrize(
    "keys,env,name,words",
    [
        (
            {"job_queue": "no-such-queue"},
            {},
            START,
            ["[omnibio_awsbatch] job_queue", "no-such-queue"],
        ),
        (
            {},
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
            START,
            ["http://127.0.0.1:9", "AWS_ENDPOINT_URL"],
        ),
        ({"mount_path": ""}, {}, START, ["[omnibio_awsbatch] mount_path"]),
    ],
)
def test_a_mistake_is_one_line_naming_its_fix(check, moto, shared, keys, env, name, words):
    checked = check(aws(moto, shared, **keys), env={**moto.server.env(), **env})
    assert checked.failed(name, *words)


def test_no_credentials(check, moto, shared):
    env = {**moto.server.env(), "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = "/nonexistent"
    checked = check(aws(moto, shared), env=env)
    assert checked.failed(START, "credentials")


def test_a_result_bucket_tasks_cannot_write(check, moto, shared):
    config = aws(moto, shared)
    config["omnibio"]["result_uri_prefix"] = "s3://no-such-bucket/results"
    checked = check(config, env=moto.server.env())
    assert checked.passed("probe task")
    assert checked.failed("result prefix writable from a task", "NoSuchBucket", "write access")
