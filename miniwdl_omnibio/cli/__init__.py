"""The command line, ``python -m miniwdl_omnibio``: check, selftest, config and report."""
