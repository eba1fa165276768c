"""The conformance runner's parsing and judging, on small made-up SPEC.md excerpts (no docker)."""

import json
import os

from tests.conformance.runner import (
    FAIL,
    INVALID,
    PASS,
    Result,
    Workspace,
    failure_signature,
    judge,
    mismatch,
    reaches_backend,
    regressions,
)
from tests.conformance.spec_examples import Example, parse_spec

SPEC = """
Some text. Example: not_an_example.wdl

<details>
  <summary>
  Example: greet_task.wdl

  ```wdl
  version 1.2

  task greet {
    command <<<
      echo hi
    >>>
  }
  ```
  </summary>
  <p>
  Example input:

  ```json
  {"greet.name": "x"}
  ```

  Example output:

  ```json
  {"greet.out": "hello.txt"}
  ```

  Test config:

  ```json
  {"exclude_output": "extra", "return_code": [1, 2]}
  ```
  </p>
</details>

<details>
<summary>
Example: broken_fail.wdl

```wdl
version 1.2
workflow broken {}
```
</summary>
<p>
Example output:

```json
{"broken.x": 1,}
```
</p>
</details>

<details>
<summary>
Resource: sub/names.txt

```txt
alice
bob
```
</summary>
</details>
"""


def test_parse_examples_resources_and_suffixes():
    spec = parse_spec(SPEC, "1.2")
    greet, broken = spec.examples
    assert greet.id == "1.2/greet_task" and greet.kind == "task" and greet.target == "greet"
    assert greet.source.startswith(
        "version 1.2\n\ntask greet {\n  command <<<\n    echo hi"
    )  # fence indent removed
    assert greet.inputs == {"greet.name": "x"} and greet.outputs == {"greet.out": "hello.txt"}
    assert (
        greet.excluded_outputs == ["extra"]
        and greet.return_codes == [1, 2]
        and not greet.expect_fail
    )
    assert broken.expect_fail and broken.kind == "workflow" and broken.target == "broken"
    assert "not valid JSON" in (broken.problem or "") and not broken.runnable
    assert spec.resources == {"sub/names.txt": "alice\nbob\n"}
    # a task runs in a container; a workflow of no task and no import never reaches a backend
    assert reaches_backend(greet) and not reaches_backend(broken)
    imports = Example("1.2", "uses_lib", 'version 1.2\nimport "lib.wdl"\nworkflow w {}\n')
    assert reaches_backend(imports)


def test_write_spec_puts_examples_data_and_resources_together(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hello\n")
    spec = parse_spec(SPEC, "1.2", str(data))
    workspace = Workspace.create(str(tmp_path / "work"), [spec])
    directory = workspace.spec_dirs["1.2"]
    assert sorted(os.listdir(directory)) == [
        "broken_fail.wdl",
        "greet_task.wdl",
        "hello.txt",
        "sub",
    ]
    assert (tmp_path / "work" / "wdl-1.2" / "sub" / "names.txt").read_text() == "alice\nbob\n"


def test_outputs_compare_without_namespace_and_files_by_name_and_content(tmp_path):
    run_dir, data_dir = tmp_path / "run", tmp_path / "data"
    run_dir.mkdir()
    data_dir.mkdir()
    (data_dir / "hello.txt").write_text("hello\n")
    produced = run_dir / "hello.txt"
    produced.write_text("hello")
    example = Example(
        "1.2",
        "w",
        "",
        outputs={"wrong_name.f": "hello.txt", "w.n": 1, "w.extra": 5},
        config={"exclude_output": "extra"},
    )
    stdout = json.dumps({"outputs": {"w.f": str(produced), "w.n": 1.0}})
    assert judge(example, 0, stdout, str(run_dir), str(data_dir)) == (PASS, "", None)
    produced.write_text("goodbye")
    assert "differs from data file" in judge(example, 0, stdout, str(run_dir), str(data_dir))[1]
    assert mismatch(True, 1, str(run_dir), str(data_dir))  # a Boolean is not an Int
    assert mismatch([1, 2], [1, 2, 3], str(run_dir), str(data_dir))
    assert (
        mismatch("/etc/hostname", "/etc/hostname", str(run_dir), str(data_dir)) is None
    )  # not a run file: a string


def test_expected_failures_check_return_code_and_keep_signature():
    error = {
        "error": "RunFailed",
        "cause": {"error": "RunFailed", "cause": {"error": "CommandFailed", "exit_status": 42}},
    }
    assert failure_signature(error) == "CommandFailed:42"
    fails = Example("1.2", "x_fail_task", "", config={"return_code": 42})
    assert judge(fails, 42, json.dumps(error), "/nonexistent", "/nonexistent") == (
        PASS,
        "failed as expected: CommandFailed:42",
        "CommandFailed:42",
    )
    wrong_code = Example("1.2", "x_fail_task", "", config={"return_code": 1})
    assert judge(wrong_code, 42, json.dumps(error), "/nonexistent", "/nonexistent")[0] == FAIL
    assert judge(fails, 0, "{}", "/nonexistent", "/nonexistent")[0] == FAIL


def test_regressions_include_a_different_failure_reason():
    baseline = {
        "passing": ["1.2/a", "1.2/b_fail", "1.2/c", "1.2/gone"],
        "failure_signatures": {"1.2/b_fail": "CommandFailed:1"},
    }
    results = [
        Result("1.2/a", PASS),
        Result("1.2/b_fail", PASS, signature="EvalError"),
        Result("1.2/c", FAIL, "boom"),
    ]
    lost = {r.id: r.outcome for r in regressions(baseline, results)}
    assert lost == {"1.2/b_fail": FAIL, "1.2/c": FAIL, "1.2/gone": INVALID}
    assert [r.id for r in regressions(baseline, results, scope={"1.2/a", "1.2/c"})] == [
        "1.2/c"
    ]  # --only
