"""Configuration of omnibio_tes runs against the fixture server."""

READONLY_VIEW = "/mnt/omnibio_inputs"


def tes_config(url, shared_dir, results=False, **tes_keys):
    """miniwdl config: identity mount of the shared directory, read-only input view; with
    ``results``, RESULT_URI under <shared dir>/results (tasks must then run a tool that writes it)."""
    return {
        "omnibio": {"result_uri_prefix": f"file://{shared_dir}/results" if results else ""},
        "omnibio_tes": {
            "url": url,
            "mount_path": shared_dir,
            "readonly_mount_path": READONLY_VIEW,
            "poll_seconds": "0.5",
            **tes_keys,
        },
    }
