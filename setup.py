"""miniwdl-omnibio's metadata, its one home (pyproject.toml holds only the build system and tool
settings). The version's one source is miniwdl_omnibio/__init__.py, read as text so building
needs none of the package's dependencies. Upstream's ``omni_tool_runtime`` import name ships
separately, from compat/ (miniwdl-omnibio-compat): it must not overwrite omnibioai-tool-runtime.
"""

import re

from setuptools import find_packages, setup

with open("miniwdl_omnibio/__init__.py", encoding="utf-8") as init:
    (VERSION,) = re.findall(r'^__version__ = "([^"]+)"$', init.read(), re.M)

setup(
    name="miniwdl-omnibio",
    version=VERSION,
    description="miniwdl container backends (Docker, AWS Batch, Azure Batch, GA4GH TES) with the OmniBioAI tool-runtime contract",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["miniwdl_omnibio", "miniwdl_omnibio.*"]),
    install_requires=["miniwdl>=1.16,<2", "docker>=6"],
    extras_require={
        "aws": ["boto3>=1.28"],
        "azure": ["azure-batch>=15,<16", "azure-identity>=1.15", "azure-storage-blob>=12.19"],
        "tes": ["py-tes>=1.1"],
        "gcs": ["google-cloud-storage>=2.10"],
        "test": [
            "pytest>=7",
            "moto[server]>=5",
            "boto3>=1.28",
            "azure-batch>=15,<16",
            "azure-identity>=1.15",
            "azure-storage-blob>=12.19",
            "py-tes>=1.1",
            "google-cloud-storage>=2.10",
            "gcp-storage-emulator>=2024.8",
            "wheel",  # pip wheel --no-build-isolation: tool images built offline in tests
            "ruff==0.17.6",
            "mypy==2.4.1",
        ],
    },
    entry_points={
        "miniwdl.plugin.container_backend": [
            "omnibio_docker = miniwdl_omnibio.backends:DockerContainer",
            "omnibio_awsbatch = miniwdl_omnibio.backends:AwsBatchContainer",
            "omnibio_azurebatch = miniwdl_omnibio.backends:AzureBatchContainer",
            "omnibio_tes = miniwdl_omnibio.backends:TesContainer",
            "omnibio_slurm = miniwdl_omnibio.backends:SlurmContainer",
        ],
        "miniwdl.plugin.task": [
            "omnibio_contract = miniwdl_omnibio.task_plugin:describe_task",
        ],
        "console_scripts": [
            "omnibio-echo-test = miniwdl_omnibio.runtime.echo_test:main",
        ],
    },
)
