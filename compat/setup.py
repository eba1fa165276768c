"""miniwdl-omnibio-compat: upstream's ``omni_tool_runtime`` API over miniwdl_omnibio.runtime.

A distribution of its own because the import name belongs to upstream's omnibioai-tool-runtime:
install one of the two, never both (each would overwrite the other's files). Its version is the
plugin's, read from ../miniwdl_omnibio/__init__.py, and it requires that very plugin version.
"""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "miniwdl_omnibio", "__init__.py"), encoding="utf-8") as init:
    (VERSION,) = re.findall(r'^__version__ = "([^"]+)"$', init.read(), re.M)

setup(
    name="miniwdl-omnibio-compat",
    version=VERSION,
    description="omnibioai-tool-runtime's omni_tool_runtime API served by miniwdl-omnibio's runtime"
    " (do not install beside omnibioai-tool-runtime)",
    python_requires=">=3.10",
    packages=find_packages(include=["omni_tool_runtime", "omni_tool_runtime.*"]),
    install_requires=[f"miniwdl-omnibio=={VERSION}"],
    entry_points={"console_scripts": ["omni-tool-runtime = omni_tool_runtime.run:main"]},
)
