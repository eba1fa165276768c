"""miniwdl's plugin lookups, answered from memory after the first (plugin_lookups.remember)."""

import importlib.metadata
import sys

from miniwdl_omnibio import plugin_lookups


def test_a_lookup_is_made_once_per_arguments_and_sys_path(monkeypatch):
    made = []

    def scan(**params):
        made.append(params)
        return tuple(params.items())

    monkeypatch.setattr(importlib.metadata, "entry_points", scan)
    monkeypatch.setattr(sys, "path", list(sys.path))
    plugin_lookups.remember()
    plugin_lookups.remember()  # a second call keeps the first memory, not a memory of it
    lookup = importlib.metadata.entry_points
    first = lookup(group="miniwdl.plugin.task")
    assert lookup(group="miniwdl.plugin.task") is first
    assert len(made) == 1
    lookup(group="miniwdl.plugin.container_backend")
    sys.path.append("/a/new/site")  # what a lookup sees may change: a new answer
    lookup(group="miniwdl.plugin.task")
    lookup()
    lookup()  # without arguments: a mutable mapping in Python 3.11, never shared
    assert made == [
        {"group": "miniwdl.plugin.task"},
        {"group": "miniwdl.plugin.container_backend"},
        {"group": "miniwdl.plugin.task"},
        {},
        {},
    ]


def test_the_answers_are_the_real_ones(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", importlib.metadata.entry_points)
    before = importlib.metadata.entry_points(group="miniwdl.plugin.container_backend")
    plugin_lookups.remember()
    after = importlib.metadata.entry_points(group="miniwdl.plugin.container_backend")
    assert {e.name for e in after} == {e.name for e in before} >= {"omnibio_docker"}
