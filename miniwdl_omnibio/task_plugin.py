"""miniwdl task plugin that hands each omnibio container the facts miniwdl keeps from it.

A TaskContainer is told neither the task's name nor its typed inputs nor the call stack; the
contract needs all three (TOOL_ID, INPUTS_JSON, RUN_ID). miniwdl shows task plugins the task
first and the container just before its first attempt, so this plugin joins the two.
"""

from .container import OmnibioContainer
from .contract import TaskFacts


def describe_task(cfg, logger, run_id, run_dir, task, **recv):
    inputs = recv["inputs"]
    recv = yield recv
    container = recv.get("container")
    if isinstance(container, OmnibioContainer):
        container.facts = TaskFacts(name=task.name, run_id_stack=tuple(run_id), inputs=inputs)
    recv = yield recv
    yield recv
