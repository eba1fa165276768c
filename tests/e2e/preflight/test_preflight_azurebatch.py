"""The preflight on omnibio_azurebatch against the Batch emulator, with results in Azurite."""

import pytest

from tests.e2e.azurebatch.conftest import azurebatch_config, azurebatch_env

START = "omnibio_azurebatch start (endpoint, credentials, pool)"


def azure(batch, shared, azurite, **keys):
    config = azurebatch_config(batch, shared, azurite, **keys)
    config["scheduler"]["container_backend"] = "omnibio_azurebatch"
    return config


def test_everything_passes(check, batch, shared, azurite):
    checked = check(azure(batch, shared, azurite), env=azurebatch_env(batch, azurite))
    assert checked.returncode == 0
    for name in (START, "shared filesystem on this host", "shared filesystem from a task"):
        assert checked.passed(name)
    assert checked.passed("result prefix writable from a task")
    assert checked.passed("result prefix readable from this host")
    assert batch.key not in checked.stdout + checked.stderr


@pytest.mark.parametrize(
    "keys,env,name,words",
    [
        ({"pool_id": "no-such-pool"}, {}, START, ["[omnibio_azurebatch] pool_id", "no-such-pool"]),
        ({"account_url": "http://127.0.0.1:9"}, {}, START, ["account_url", "127.0.0.1:9"]),
        (
            {},
            {"AZURE_BATCH_ACCOUNT_KEY": ""},
            START,
            ["account_key_env", "AZURE_BATCH_ACCOUNT_KEY"],
        ),
        (
            {},
            {"AZURE_BATCH_ACCOUNT_KEY": "d3Jvbmcta2V5LXdyb25nLWtleQ=="},
            START,
            ["account_key_env", "rejected"],
        ),
        # the pool's nodes mount the shared filesystem elsewhere than node_mount_path says
        (
            {"node_mount_path": "/mnt/batch/tasks/fsmounts/nothing"},
            {},
            "probe task",
            ["not visible"],
        ),
    ],
)
def test_a_mistake_is_one_line_naming_its_fix(
    check, batch, shared, azurite, keys, env, name, words
):
    checked = check(
        azure(batch, shared, azurite, **keys), env={**azurebatch_env(batch, azurite), **env}
    )
    assert checked.failed(name, *words)
    assert batch.key not in checked.stdout + checked.stderr


def test_a_result_container_that_does_not_exist(check, batch, shared, azurite):
    config = azure(batch, shared, azurite)
    config["omnibio"]["result_uri_prefix"] = "azureblob://devstoreaccount1/no-such-container/r"
    checked = check(config, env=azurebatch_env(batch, azurite))
    assert checked.passed("probe task")
    assert checked.failed(
        "result prefix writable from a task", "container does not exist", "write access"
    )
    assert azurite.connection_string not in checked.stdout + checked.stderr
