"""Upstream's uploader classes, over miniwdl_omnibio.runtime.store."""
