"""Complete a folder of wheels for another Python than the one running (``make batch-package``).

``pip download --python-version X`` picks wheels for X but evaluates environment markers for the
running interpreter (pypa/pip#11010): a dependency only Python 3.10 needs, such as anyio's
``exceptiongroup; python_version < "3.11"``, is skipped when the package is built on 3.11. This
reads every wheel's ``Requires-Dist``, evaluates the markers for the target, and downloads what
is missing (``pip download --no-deps``) until nothing is.

    python complete.py --dest wheels --python-version 3.10 --platform manylinux2014_x86_64 ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename


def target_environment(version: str) -> dict[str, str]:
    return {"python_version": version, "python_full_version": f"{version}.0", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
            "os_name": "posix", "platform_machine": "x86_64", "extra": ""}


def wheels_for(dest: Path, tags: set[Tag]) -> dict[str, list[str]]:
    """Name -> versions of the wheels in ``dest`` that install on the target."""
    found: dict[str, list[str]] = {}
    for wheel in dest.glob("*.whl"):
        name, version, _, wheel_tags = parse_wheel_filename(wheel.name)
        if wheel_tags & tags:
            found.setdefault(name, []).append(str(version))
    return found


def requirements_of(dest: Path, tags: set[Tag], environment: dict[str, str]) -> list[Requirement]:
    needed = []
    for wheel in dest.glob("*.whl"):
        if not parse_wheel_filename(wheel.name)[3] & tags:
            continue
        with zipfile.ZipFile(wheel) as archive:
            metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            message = Parser().parsestr(archive.read(metadata).decode("utf-8"))
        for line in message.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                needed.append(requirement)
    return needed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--python-version", required=True)
    parser.add_argument("--platform", action="append", required=True)
    args = parser.parse_args()
    major, minor = (int(part) for part in args.python_version.split(".")[:2])
    tags = set(cpython_tags((major, minor), platforms=args.platform)) | set(compatible_tags((major, minor), platforms=args.platform))
    environment = target_environment(f"{major}.{minor}")
    for _ in range(20):  # each round adds the dependencies of what the last one added
        available = wheels_for(args.dest, tags)
        missing = sorted({str(Requirement(f"{r.name}{r.specifier}")) for r in requirements_of(args.dest, tags, environment)
                          if not any(r.specifier.contains(v, prereleases=True)
                                     for v in available.get(canonicalize_name(r.name), []))})
        if not missing:
            return 0
        print(f"python {major}.{minor} also needs: {', '.join(missing)}")
        platforms = [flag for platform in args.platform for flag in ("--platform", platform)]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--only-binary=:all:", "--implementation", "cp", "--python-version", f"{major}.{minor}",
                        *platforms, "--dest", str(args.dest), *missing], check=True)
    print("the dependencies did not settle after 20 rounds", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
