"""Rewrite the configuration key tables of the docs from the keys' declarations.

    python scripts/key_tables.py [FILE.md ...]     (default: README.md and docs/*.md)

A table follows a ``<!-- config keys: SECTION [KEY ...] -->`` line; tests/unit/test_config_keys.py
fails while one differs from what this writes.
"""

import glob
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from miniwdl_omnibio.config import rewrite_key_tables  # noqa: E402


def main(paths: list[str]) -> None:
    for path in paths or [os.path.join(REPO, "README.md"), *glob.glob(f"{REPO}/docs/*.md")]:
        with open(path, encoding="utf-8") as infile:
            text = infile.read()
        if rewrite_key_tables(text) != text:
            with open(path, "w", encoding="utf-8") as outfile:
                outfile.write(rewrite_key_tables(text))
            print(f"rewrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
