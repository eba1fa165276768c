"""The configuration promises of README.md "Configuration" and the example files: every key is
printed by `python -m miniwdl_omnibio config`, and examples/docker.cfg, azurebatch.cfg and
tes.cfg pass the plugin's own configuration check (examples/awsbatch.cfg: test_awsbatch.py)."""

import configparser
import logging
import os
import re
import subprocess
import sys

import pytest
from WDL.runtime import config as miniwdl_config

from miniwdl_omnibio.config import DEFAULTS, ConfigError, OmnibioSettings, Settings, check_sections
from miniwdl_omnibio.engines.azurebatch.settings import AzureBatchSettings
from miniwdl_omnibio.engines.docker.settings import DockerSettings
from miniwdl_omnibio.engines.tes.settings import TesSettings
from tests.helpers import REPO

PACKAGE = os.path.join(REPO, "miniwdl_omnibio")
# settings.text("key"), settings.choice("key", ...), raise settings.fail("key", ...), ...
READ = re.compile(
    r"\.(?:raw|text|choice|integer|number|flag|size|json_list|json_object|fail)\(\s*\"(\w+)\""
)


def _printed() -> configparser.ConfigParser:
    proc = subprocess.run(
        [sys.executable, "-m", "miniwdl_omnibio", "config"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    printed = configparser.ConfigParser(interpolation=None)
    printed.read_string(proc.stdout)
    return printed


def _keys_the_code_reads() -> set[str]:
    keys = set()
    for current, _dirs, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py") and "runtime" not in current.split(os.sep):
                with open(os.path.join(current, name)) as infile:
                    keys.update(READ.findall(infile.read()))
    return keys


def test_config_prints_every_key_with_its_default():
    printed = _printed()
    assert {s: dict(printed[s]) for s in printed.sections()} == {
        section: {key: str(value) for key, value in keys.items()}
        for section, keys in DEFAULTS.items()
    }
    everywhere = {key for section in printed.sections() for key in printed[section]}
    read = _keys_the_code_reads()
    assert len(read) > 40  # the scan finds the keys (a broken pattern would find none)
    assert read - everywhere == set(), "keys the code reads that `config` does not print"


def _loader(name: str) -> miniwdl_config.Loader:
    return miniwdl_config.Loader(logging.getLogger("test"), [os.path.join(REPO, "examples", name)])


def _checked(cfg: miniwdl_config.Loader, section: str) -> None:
    """What `python -m miniwdl_omnibio check` checks of a configuration, then the engine's own
    parsing of its section (what its start does first, before any service is asked)."""
    check_sections(cfg, ("omnibio", section))
    OmnibioSettings.load(cfg)
    assert set(cfg.get_all(defaults=False).get(section, {})) <= set(DEFAULTS[section])


def test_example_docker_cfg_is_valid():
    cfg = _loader("docker.cfg")
    assert cfg["scheduler"]["container_backend"] == "omnibio_docker"
    _checked(cfg, "omnibio_docker")
    assert DockerSettings.load(Settings(cfg, "omnibio_docker")).network == "sandbox"


def test_example_azurebatch_cfg_is_valid(monkeypatch):
    monkeypatch.setenv("AZURE_BATCH_ACCOUNT_KEY", "a2V5")
    monkeypatch.setenv("ACR_PASSWORD", "secret")
    cfg = _loader("azurebatch.cfg")
    assert cfg["scheduler"]["container_backend"] == "omnibio_azurebatch"
    _checked(cfg, "omnibio_azurebatch")
    settings = AzureBatchSettings.load(Settings(cfg, "omnibio_azurebatch"))
    assert settings.pool_id == "omnibio-d4s-spot"
    assert OmnibioSettings.load(cfg).result_prefix is not None


def test_example_tes_cfg_is_valid():
    cfg = _loader("tes.cfg")
    assert cfg["scheduler"]["container_backend"] == "omnibio_tes"
    _checked(cfg, "omnibio_tes")
    settings = TesSettings.load(cfg)
    assert settings.url == "http://127.0.0.1:8765"


def test_the_check_refuses_a_typo_in_an_example(tmp_path):
    """The check above can fail: one unknown key, named in one line."""
    with open(os.path.join(REPO, "examples", "docker.cfg")) as infile:
        text = infile.read()
    typo = tmp_path / "typo.cfg"
    typo.write_text(text.replace("network = sandbox", "netwrok = sandbox"))
    cfg = miniwdl_config.Loader(logging.getLogger("test"), [str(typo)])
    with pytest.raises(
        ConfigError, match=r"unknown configuration key\(s\) \[omnibio_docker\] netwrok"
    ):
        check_sections(cfg, ("omnibio", "omnibio_docker"))
