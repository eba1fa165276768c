"""Upstream OmniBioAI tool-runtime API (``omni_tool_runtime``) served by miniwdl_omnibio.runtime.

Tools written against omnibioai-tool-runtime import these modules unchanged; each is a thin layer
that keeps upstream's names, keyword arguments and error texts and calls miniwdl_omnibio.runtime
for the work.
"""
