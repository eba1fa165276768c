"""miniwdl_omnibio: run WDL tasks on Docker, AWS Batch, Azure Batch or GA4GH TES with the
OmniBioAI tool-runtime environment contract.

Importing this package must stay cheap and free of miniwdl: tool images install it only for
``miniwdl_omnibio.runtime``.
"""

__version__ = "0.1.0"
