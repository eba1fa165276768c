"""The configuration promises of README.md "Configuration" and the example files: each key is
declared once (miniwdl_omnibio/settings.py) and loaded, printed by `python -m miniwdl_omnibio
config` with its default and help, and tabled in the docs from that declaration; a bad value is
one line naming the key; examples/docker.cfg, azurebatch.cfg and tes.cfg pass the plugin's own
configuration check (examples/awsbatch.cfg: test_awsbatch.py)."""

import configparser
import glob
import logging
import os
import re
import subprocess
import sys

import pytest
from WDL.runtime import config as miniwdl_config

from miniwdl_omnibio.config import (
    DEFAULTS,
    SECTIONS,
    ConfigError,
    OmnibioSettings,
    check_sections,
    key_table,
    rewrite_key_tables,
)
from miniwdl_omnibio.engines.awsbatch.settings import AwsBatchSettings
from miniwdl_omnibio.engines.azurebatch.settings import AzureBatchSettings
from miniwdl_omnibio.engines.docker.settings import DockerSettings
from miniwdl_omnibio.engines.slurm.settings import SlurmSettings
from miniwdl_omnibio.engines.tes.settings import TesSettings
from miniwdl_omnibio.settings import EngineSettings
from tests.helpers import REPO

PACKAGE = os.path.join(REPO, "miniwdl_omnibio")
# raise settings.fail("key", ...): a problem found after parsing, named by its key
FAILED = re.compile(r"\.fail\(\s*\"(\w+)\"")
DOCS = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))


def _config(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "miniwdl_omnibio", "config", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": REPO},
    ).stdout


def _keys_the_code_names() -> set[str]:
    keys = set()
    for current, _dirs, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py") and "runtime" not in current.split(os.sep):
                with open(os.path.join(current, name)) as infile:
                    keys.update(FAILED.findall(infile.read()))
    return keys


def test_config_prints_every_key_with_its_default_and_help():
    text = _config()
    printed = configparser.ConfigParser(interpolation=None)
    printed.read_string(text)
    assert {s: dict(printed[s]) for s in printed.sections()} == DEFAULTS
    lines = text.splitlines()
    for settings in SECTIONS:
        section = lines.index(f"[{settings.section}]")
        for _field, declared in settings.declarations():
            at = lines.index(f"{declared.name} = {declared.default}".rstrip(), section)
            comment = []
            while lines[at - 1 - len(comment)].startswith("# "):
                comment.insert(0, lines[at - 1 - len(comment)][2:])
            assert " ".join(comment) == declared.help.replace("`", ""), declared.name
    everywhere = {key for keys in DEFAULTS.values() for key in keys}
    named = _keys_the_code_names()
    assert len(named) > 15  # the scan finds the keys (a broken pattern would find none)
    assert named - everywhere == set(), "keys the code names that `config` does not print"


def test_defaults_are_derived_from_the_declarations():
    assert list(DEFAULTS) == [s.section for s in SECTIONS]
    assert DEFAULTS["omnibio_docker"]["poll_seconds"] == "2"  # the engine's own default
    assert DEFAULTS["omnibio_awsbatch"]["poll_seconds"] == "5"
    assert DEFAULTS["omnibio_tes"]["max_cpu"] == "64" and DEFAULTS["omnibio_slurm"]["max_cpu"] == ""
    assert (
        DEFAULTS["omnibio"]["unlisted_grace_seconds"] == "120"
    )  # a key named apart from its field
    for settings in SECTIONS[1:]:
        assert issubclass(settings, EngineSettings)
        assert {"poll_seconds", "default_time_limit", "max_cpu", "max_memory"} <= set(
            DEFAULTS[settings.section]
        )


def test_every_default_parses():
    for settings in SECTIONS:
        for _field, declared in settings.declarations():
            if not declared.required:
                declared.value(settings.section, declared.default)


def _env(monkeypatch, section: str, **values: str) -> miniwdl_config.Loader:
    for name in [n for n in os.environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(f"MINIWDL__{section.upper()}__{name.upper()}", value)
    return miniwdl_config.Loader(logging.getLogger("test"), filenames=[])


def test_the_loader_gives_each_key_its_default_parsed(monkeypatch):
    docker = DockerSettings.load(_env(monkeypatch, "omnibio_docker"))
    assert docker == DockerSettings(
        poll_seconds=2.0,
        default_time_limit=None,
        max_cpu=None,
        max_memory=None,
        network="sandbox",
        allow_networks=(),
        admission=True,
        pull="missing",
    )
    omnibio = OmnibioSettings.load(_env(monkeypatch, "omnibio", unlisted_grace_seconds="7"))
    assert omnibio.result_max_bytes == 1 << 20 and omnibio.unlisted_grace == 7.0
    assert omnibio.result_prefix is None and omnibio.memory_retry_multiplier is None
    tes = TesSettings.load(_env(monkeypatch, "omnibio_tes", url="http://tes/", mount_path="/m"))
    assert (tes.url, tes.max_cpu, tes.max_memory) == ("http://tes", 64, 256 * 10**9)
    assert tes.filesystem is not None and tes.filesystem.host_root == "/m"


@pytest.mark.parametrize(
    "section, name, value, problem",
    [
        ("omnibio_docker", "poll_seconds", "soon", "'soon' is not a number"),
        ("omnibio_docker", "poll_seconds", "0.01", "0.01 is below the minimum 0.05"),
        ("omnibio_docker", "default_time_limit", "1.5", "'1.5' is not an integer"),
        ("omnibio_docker", "default_time_limit", "-1", "-1 is below the minimum 0"),
        ("omnibio_docker", "max_cpu", "many", "'many' is not an integer"),
        ("omnibio_docker", "max_cpu", "0", "0 is below the minimum 1"),
        ("omnibio_docker", "max_memory", "lots", "'lots' is not a size such as 4G or 512 MiB"),
        ("omnibio_docker", "admission", "perhaps", "'perhaps' is not true or false"),
        ("omnibio_docker", "pull", "Sometimes", "'sometimes' is not one of missing, always, never"),
        ("omnibio_docker", "allow_networks", "[x", "'[x' is not valid JSON"),
        ("omnibio_docker", "allow_networks", "{}", "should be a JSON list"),
        ("omnibio", "prices", "[]", "should be a JSON dict"),
        ("omnibio", "prices", '{"omnibio_x": {}}', "'omnibio_x' is not a backend"),
        ("omnibio", "result_uri_prefix", "ftp://b/x", "unknown scheme 'ftp'"),
        ("omnibio", "memory_retry_multiplier", "0.5", "'0.5' is not a number of at least 1"),
        ("omnibio_slurm", "sbatch_options", "--comment='x", "No closing quotation"),
        ("omnibio_slurm", "mount_path", "", "is required but not set"),
        ("omnibio_tes", "page_size", "4096", "4096 is too large; TES servers accept at most 2047"),
        ("omnibio_tes", "max_cpu", "", "'' is not an integer"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(monkeypatch, section, name, value, problem):
    settings = next(s for s in SECTIONS if s.section == section)
    values = {"mount_path": "/shared"} if section == "omnibio_slurm" else {}
    if section == "omnibio_tes":
        values = {"url": "http://tes", "mount_path": "/shared"}
    with pytest.raises(ConfigError) as raised:
        settings.load(_env(monkeypatch, section, **{**values, name: value}))
    message = str(raised.value)
    where = f"[{section}] {name} (env MINIWDL__{section.upper()}__{name.upper()}): "
    assert message.startswith(f"configuration {where}") and problem in message
    assert "\n" not in message


def test_a_check_across_keys_names_the_key(monkeypatch):
    cfg = _env(monkeypatch, "omnibio_awsbatch", job_queue="q", mount_path="/m")
    with pytest.raises(ConfigError, match=r"\[omnibio_awsbatch\] efs_id .*set exactly one of"):
        AwsBatchSettings.load(cfg)
    with pytest.raises(AssertionError, match="undeclared config key"):
        AwsBatchSettings.fail("efs", "a typo in the code")


def test_the_docs_key_tables_are_the_declarations():
    """Each table after a <!-- config keys: SECTION [KEY ...] --> line is made from the
    declarations (python scripts/key_tables.py rewrites them), and each section has a table of
    all its keys."""
    complete = set()
    for path in DOCS:
        with open(path) as infile:
            text = infile.read()
        assert rewrite_key_tables(text) == text, f"{path}: run python scripts/key_tables.py"
        complete.update(re.findall(r"^<!-- config keys: (\w+) -->$", text, re.M))
    assert complete == set(DEFAULTS)


def test_config_markdown_prints_a_section_table():
    table = _config("--markdown", "omnibio_slurm", "probe", "probe_timeout")
    assert table == key_table("omnibio_slurm", ["probe", "probe_timeout"])
    meaning = {declared.name: declared.help for _field, declared in SlurmSettings.declarations()}
    assert table.splitlines() == [
        "| key | default | meaning |",
        "|---|---|---|",
        f"| `probe` | `true` | {meaning['probe']} |",
        f"| `probe_timeout` | `60` | {meaning['probe_timeout']} |",
    ]
    assert len(_config("--markdown", "omnibio").splitlines()) == 2 + len(DEFAULTS["omnibio"])


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
    assert DockerSettings.load(cfg).network == "sandbox"


def test_example_azurebatch_cfg_is_valid(monkeypatch):
    monkeypatch.setenv("AZURE_BATCH_ACCOUNT_KEY", "a2V5")
    monkeypatch.setenv("ACR_PASSWORD", "secret")
    cfg = _loader("azurebatch.cfg")
    assert cfg["scheduler"]["container_backend"] == "omnibio_azurebatch"
    _checked(cfg, "omnibio_azurebatch")
    settings = AzureBatchSettings.load(cfg)
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
