"""The container backends miniwdl finds by entry point (group miniwdl.plugin.container_backend).

miniwdl imports every registered backend class before it runs any task, so these classes must
import without boto3, the Azure SDK or py-tes: each names its engine, imported at global_init.
"""

from .container import OmnibioContainer


class DockerContainer(OmnibioContainer):
    """omnibio_docker: one local Docker container per task attempt."""

    engine_path = "miniwdl_omnibio.engines.docker.engine:DockerEngine"


class AwsBatchContainer(OmnibioContainer):
    """omnibio_awsbatch: one AWS Batch job per task attempt."""

    engine_path = "miniwdl_omnibio.engines.awsbatch.engine:AwsBatchEngine"
    extra = "aws"


class AzureBatchContainer(OmnibioContainer):
    """omnibio_azurebatch: one Azure Batch container task per task attempt."""

    engine_path = "miniwdl_omnibio.engines.azurebatch.engine:AzureBatchEngine"
    extra = "azure"


class TesContainer(OmnibioContainer):
    """omnibio_tes: one GA4GH TES task per task attempt."""

    engine_path = "miniwdl_omnibio.engines.tes.engine:TesEngine"
    extra = "tes"


class SlurmContainer(OmnibioContainer):
    """omnibio_slurm: one Slurm job (or array element) per task attempt."""

    engine_path = "miniwdl_omnibio.engines.slurm.engine:SlurmEngine"
