"""Maps the project's folders into one import package, `hewn` (metadata lives in pyproject.toml).

compiler/ is `hewn`, passes/ `hewn.passes`, targets/ `hewn.targets`, models/ `hewn.models`.
Subpackages are found per folder, so a new subfolder is never silently left out of the wheel.
bench/ and tests/ are not installed.
"""
from setuptools import find_packages, setup

FOLDERS = {"hewn": "compiler", "hewn.passes": "passes", "hewn.targets": "targets", "hewn.models": "models"}

packages = []
for name, folder in FOLDERS.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]

setup(packages=packages, package_dir=FOLDERS)
