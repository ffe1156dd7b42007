"""The one version string: pyproject.toml's, as installed (a source tree run without installing says so)."""
from __future__ import annotations


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hewn")
    except PackageNotFoundError:
        return "0+not-installed"
