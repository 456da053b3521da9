"""A non-editable install (`pip install .`, as deploy/Dockerfile does) carries every data
file the code reads: each non-Python file under src/ is matched by pyproject's
package-data. An editable checkout never notices a missing entry; the image would."""

from __future__ import annotations

import fnmatch

import tomllib

from tests.deploy.files import ROOT

SRC = ROOT / "src"


def test_every_data_file_under_src_is_packaged():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_data = setuptools.get("package-data", {})
    data_files = [
        p
        for p in (SRC / "tokenmill").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert data_files
    missing = []
    for path in data_files:
        relative = path.relative_to(SRC)
        matched = False
        for package, globs in package_data.items():
            package_dir = SRC.joinpath(*package.split("."))
            if package_dir in path.parents:
                inner = path.relative_to(package_dir).as_posix()
                matched |= any(fnmatch.fnmatch(inner, g) for g in globs)
        if not matched:
            missing.append(str(relative))
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
