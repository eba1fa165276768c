"""``python -m miniwdl_omnibio check --cfg my.cfg``, ``... selftest --backend omnibio_docker``,
``... config [--markdown SECTION [KEY ...]]`` and ``... report RUN_DIR``."""

import argparse
import logging
import sys

from WDL.runtime import config as miniwdl_config

from ..config import DEFAULTS, ConfigError, OmnibioSettings, config_text, key_table
from ..report import REPORT, write_report


def report(run_dir: str, cfg_file: str | None) -> int:
    """report.html in the run directory, priced by the configuration's [omnibio] prices."""
    try:
        cfg = miniwdl_config.Loader(
            logging.getLogger("omnibio-report"), [cfg_file] if cfg_file else None
        )
        path = write_report(run_dir, OmnibioSettings.load(cfg).prices)
    except (OSError, ValueError, ConfigError) as exn:
        print(f"cannot write {REPORT} in {run_dir}: {exn}", file=sys.stderr)
        return 1
    print(path)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miniwdl_omnibio")
    sub = parser.add_subparsers(dest="command", required=True)
    selftest = sub.add_parser("selftest", help="offline equivalent of `miniwdl run_self_test`")
    selftest.add_argument("--backend", default="omnibio_docker")
    selftest.add_argument(
        "--dir", help="where to run (on the shared filesystem for cloud backends)"
    )
    selftest.add_argument("--cfg", help="miniwdl configuration file")
    selftest.add_argument("--image", default="ubuntu:22.04", help="image of the plain tasks")
    selftest.add_argument(
        "--runtime-image", default="omnibio/runtime:latest", help="image with the tool runtime"
    )
    config = sub.add_parser(
        "config", help="print every configuration key with its default and meaning, as a .cfg file"
    )
    config.add_argument(
        "--markdown",
        nargs="+",
        metavar=("SECTION", "KEY"),
        help="print the keys of SECTION (all, or those named) as the docs' markdown table",
    )
    check = sub.add_parser(
        "check", help="check a configuration: engine, credentials, shared filesystem, results"
    )
    check.add_argument("--cfg", help="miniwdl configuration file (default: as miniwdl finds it)")
    check.add_argument(
        "--image",
        default="omnibio/runtime:latest",
        help="image of the probe task: one the workers can pull, with python3 and the tool runtime",
    )
    check.add_argument(
        "--dir", help="where the probe runs (default: the shared filesystem, else a temp dir)"
    )
    check.add_argument(
        "--timeout", type=float, default=900, help="seconds the probe task may take (default 900)"
    )
    report_cmd = sub.add_parser("report", help="write report.html from a run directory's trace")
    report_cmd.add_argument("run_dir", help="the run directory (holding omnibio_trace.tsv)")
    report_cmd.add_argument(
        "--cfg",
        help="miniwdl configuration file with [omnibio] prices (default: as miniwdl finds it)",
    )
    args = parser.parse_args(argv)
    if args.command == "report":
        return report(args.run_dir, args.cfg)
    if args.command == "config" and args.markdown:
        section, *keys = args.markdown
        if section not in DEFAULTS:
            parser.error(f"no section {section}; sections: {', '.join(DEFAULTS)}")
        print(key_table(section, keys), end="")
        return 0
    if args.command == "config":
        print(config_text(), end="")
        return 0
    if args.command == "check":
        from .check import run as preflight

        return preflight(args.cfg, args.image, args.dir, args.timeout, sys.stdout)
    from .selftest import run

    problems = run(args.backend, args.dir, args.cfg, args.image, args.runtime_image)
    for problem in problems:
        print("FAILED: " + problem, file=sys.stderr)
    if problems:
        return 1
    print(f"miniwdl_omnibio self-test passed on {args.backend}")
    return 0
