"""ggserve: command line, configuration, and supervision of the server's processes."""

import importlib.metadata


def installed_version(package: str) -> str:
    """The package's installed version; a checkout run from PYTHONPATH (as on the GPU machines)
    has no installed metadata."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"
