"""Work every `miniwdl run` repeats, done once in the forkserver of tests/preloaded.py.

Imported there, so each forked run inherits the results:

* miniwdl builds a WDL version's lark parser the first time it parses that version, about
  0.15 s of CPU per run;
* miniwdl looks its plugins up with ``importlib.metadata.entry_points(group=...)`` several times
  per run and per task, each a scan of every installed distribution (about 0.01 s). The installed
  distributions do not change while the tests run, so each group's answer is kept.
"""

import functools
import importlib.metadata

import WDL

for _version in ("1.0", "1.1", "1.2"):
    WDL.parse_document(f"version {_version}\n")

importlib.metadata.entry_points = functools.cache(importlib.metadata.entry_points)
