"""The runnable examples of the WDL specifications, parsed from SPEC.md into test cases.

The format is openwdl's "Markdown test" convention: a ``<details>`` block whose ``<summary>``
holds ``Example: NAME.wdl`` and the WDL source, then optional ``Example input:``,
``Example output:`` and ``Test config:`` JSON blocks; ``<details>`` blocks whose summary is
``Resource: PATH`` embed an input file. NAME suffixes ``_task``, ``_fail``, ``_fail_task`` and
``_resource`` imply the test type and expected outcome unless the config says otherwise.

Examples are kept per spec version (ids ``1.1/NAME``, ``1.2/NAME``): the two versions' sources
always differ in their ``version`` line, and the same body may mean different things under
another version, so nothing is merged across versions.
"""

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any

SPEC_DIRS = {"1.1": "wdl-1.1", "1.2": "wdl-1.2"}
DETAILS = re.compile(r"<details>(.*?)</details>", re.S)
SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.S)
EXAMPLE_NAME = re.compile(r"^\s*Example:\s*(\S+?)(?:\.wdl)?\s*$", re.M)
RESOURCE_NAME = re.compile(r"^\s*Resource:\s*(\S+)\s*$", re.M)
# a fenced block: its indentation, info string and body (CommonMark: the closing fence may be
# indented differently; body lines lose up to the opening fence's indentation)
FENCE = re.compile(r"^([ \t]*)```[ \t]*(\w*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
SECTION = re.compile(r"^\s*(Example input|Example output|Test config):\s*$", re.M)


@dataclass(frozen=True)
class Example:
    version: str  # "1.1" or "1.2"
    name: str  # the example's file name without .wdl, e.g. "hello" or "read_lines_task"
    source: str  # the WDL document
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why the example cannot be run as written (e.g. bad JSON)

    @property
    def id(self) -> str:
        return f"{self.version}/{self.name}"

    @property
    def kind(self) -> str:
        """task | workflow | resource (resource examples are only imported by others)."""
        if "type" in self.config:
            return str(self.config["type"])
        if self.name.endswith("_resource"):
            return "resource"
        return "task" if self.name.endswith("_task") else "workflow"

    @property
    def target(self) -> str:
        """The workflow or task to run: the name without its special suffixes, unless configured."""
        if self.config.get("target"):
            return str(self.config["target"])
        name = self.name
        for suffix in ("_task", "_fail", "_resource"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        return name

    @property
    def expect_fail(self) -> bool:
        if "fail" in self.config:
            return bool(self.config["fail"])
        return self.name.endswith("_fail") or self.name.endswith("_fail_task")

    @property
    def return_codes(self) -> list[int] | None:
        """Exit codes an expected failure may have; None = any ("*" or unset)."""
        value = self.config.get("return_code", "*")
        if value == "*":
            return None
        return [int(v) for v in (value if isinstance(value, list) else [value])]

    @property
    def excluded_outputs(self) -> list[str]:
        """Outputs not to compare (the test spec's ``exclude_output``; ``exclude_outputs`` too)."""
        names: list[str] = []
        for key in ("exclude_output", "exclude_outputs"):
            value = self.config.get(key, [])
            names += value if isinstance(value, list) else [value]
        return [str(n) for n in names]

    @property
    def runnable(self) -> bool:
        return (
            self.problem is None
            and self.kind != "resource"
            and self.config.get("priority") != "ignore"
        )


@dataclass(frozen=True)
class Spec:
    version: str
    examples: tuple[Example, ...]
    resources: dict[str, str]  # path relative to the data directory -> content
    data_dir: str | None  # the spec's data/ directory, if any


def fenced(text: str) -> list[tuple[str, str]]:
    """(info string, body) of each fenced code block, the fence's indentation removed."""
    blocks = []
    for indent, info, body in FENCE.findall(text):
        width = len(indent.expandtabs())
        lines = [re.sub(rf"^ {{0,{width}}}", "", line) for line in body.split("\n")]
        blocks.append((info, "\n".join(lines).rstrip() + "\n"))
    return blocks


def parse_example(version: str, name: str, summary: str, details: str) -> Example:
    wdl = [body for info, body in fenced(summary) if info == "wdl"]
    if not wdl:
        return Example(version, name, "", problem="no ```wdl block in the summary")
    sections: dict[str, Any] = {}
    problem = None
    rest = details[details.find("</summary>") :]
    marks = list(SECTION.finditer(rest))
    for i, mark in enumerate(marks):
        chunk = rest[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(rest)]
        blocks = [body for info, body in fenced(chunk) if info == "json"]
        if not blocks:
            problem = problem or f"{mark.group(1)}: no ```json block"
            continue
        try:
            value = json.loads(blocks[0])
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            sections[mark.group(1)] = value
        except ValueError as exn:
            problem = problem or f"{mark.group(1)} is not valid JSON ({exn})"
    return Example(
        version=version,
        name=name,
        source=wdl[0],
        inputs=sections.get("Example input", {}),
        outputs=sections.get("Example output", {}),
        config=sections.get("Test config", {}),
        problem=problem,
    )


def parse_spec(markdown: str, version: str, data_dir: str | None = None) -> Spec:
    examples: dict[str, Example] = {}
    resources: dict[str, str] = {}
    for details in DETAILS.findall(markdown):
        summary_match = SUMMARY.search(details)
        if not summary_match:
            continue
        summary = summary_match.group(1)
        resource = RESOURCE_NAME.search(summary)
        if resource:
            bodies = fenced(summary) or fenced(details)
            if bodies:
                resources[resource.group(1)] = bodies[0][1]
            continue
        named = EXAMPLE_NAME.search(summary)
        if not named:
            continue
        example = parse_example(version, named.group(1), summary, details)
        if example.name in examples:
            example = Example(
                version, example.name, example.source, problem="example name used twice in SPEC.md"
            )
        examples[example.name] = example
    return Spec(version, tuple(examples.values()), resources, data_dir)


def load_specs(conformance_dir: str) -> list[Spec]:
    """Every spec version present under ``conformance_dir`` (the shared/conformance layout)."""
    specs = []
    for version, subdir in SPEC_DIRS.items():
        path = os.path.join(conformance_dir, subdir, "SPEC.md")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as infile:
            markdown = infile.read()
        data_dir = os.path.join(conformance_dir, subdir, "data")
        specs.append(parse_spec(markdown, version, data_dir if os.path.isdir(data_dir) else None))
    return specs


def write_spec(spec: Spec, root: str) -> str:
    """Write a version's examples, data files and resources into ``root/wdl-VERSION``.

    Everything shares one directory so ``import "other.wdl"`` resolves and relative input paths
    (which the spec makes relative to the data directory) resolve from it as the working directory.
    Returns that directory.
    """
    directory = os.path.join(root, SPEC_DIRS[spec.version])
    os.makedirs(directory, exist_ok=True)
    if spec.data_dir:
        shutil.copytree(spec.data_dir, directory, dirs_exist_ok=True)
    for path, content in spec.resources.items():
        target = os.path.normpath(os.path.join(directory, path.lstrip("/")))
        if not target.startswith(directory + os.sep):
            raise ValueError(f"{spec.version} resource {path!r} escapes the data directory")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as outfile:
            outfile.write(content)
    for example in spec.examples:
        if example.source:
            with open(
                os.path.join(directory, example.name + ".wdl"), "w", encoding="utf-8"
            ) as outfile:
                outfile.write(example.source)
    for dirpath, _dirnames, filenames in os.walk(directory):
        # containers may run as another uid: everything world-readable
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return directory
