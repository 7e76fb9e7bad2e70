import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    """A wheel ships only the packages pyproject lists; a forgotten subpackage still works in
    the editable install and breaks for users who install the wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(ROOT / folder).parts]))
    assert {"fourreal", "fourreal.recon", "fourreal.tracking", "fourreal.viewers"} <= found
    missing = found - set(config["packages"])
    assert not missing, f"add to [tool.setuptools] packages: {sorted(missing)}"
