"""Configuration of omnibio_tes runs against the test server and moto S3."""

BUCKET = "omnibio-staging"
READONLY_VIEW = "/mnt/omnibio_inputs"  # where a worker volume shows the shared directory read-only
STAGING = f"s3://{BUCKET}/tes"


def tes_config(url, results_dir=None, **tes_keys):
    """miniwdl config for staging mode through moto S3; with ``results_dir``, RESULT_URI under
    file://<results_dir> (tasks must then run a tool that writes it)."""
    config = {
        "omnibio_tes": {"url": url, "staging_uri": STAGING, "poll_seconds": "0.5", **tes_keys}
    }
    if results_dir:
        config["omnibio"] = {"result_uri_prefix": f"file://{results_dir}"}
    return config


def shared_config(url, shared_dir, **tes_keys):
    """miniwdl config for shared-filesystem mode: the worker mounts ``shared_dir`` in place."""
    return {
        "omnibio": {"result_uri_prefix": ""},
        "omnibio_tes": {
            "url": url,
            "mount_path": shared_dir,
            "poll_seconds": "0.5",
            **tes_keys,
        },
    }
