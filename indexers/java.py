"""Find a Java runtime new enough for Pyserini (≥ 21) and point ``JAVA_HOME``/``PATH`` at it.

Pyserini starts a JVM (through pyjnius) when its search or encode modules are imported; with an
older Java it fails deep inside with ``UnsupportedClassVersionError``. :func:`configure_java`
must run before that import. Where it looks, in order:

1. ``BERTAPPROX_JAVA_HOME``, then ``JAVA_HOME`` (used when they are Java ≥ 21);
2. the ``java`` on ``PATH`` (its real installation folder);
3. the usual JDK folders: ``/usr/lib/jvm/*``, ``/usr/local/lib/jvm/*``, ``/usr/java/*``, ``/opt/java/*``,
   ``/opt/jdk*``, ``/opt/*jdk*``, ``~/.jdks/*``, ``~/.sdkman/candidates/java/*``,
   ``/Library/Java/JavaVirtualMachines/*/Contents/Home`` — the newest that qualifies wins.

A folder's version comes from its ``release`` file (``JAVA_VERSION="25.0.3"``), else from
``bin/java -version``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

MIN_JAVA_VERSION = 21
SEARCH_PATTERNS = (
    "/usr/lib/jvm/*",
    "/usr/local/lib/jvm/*",
    "/usr/java/*",
    "/opt/java/*",
    "/opt/jdk*",
    "/opt/*jdk*",
    "~/.jdks/*",
    "~/.sdkman/candidates/java/*",
    "/Library/Java/JavaVirtualMachines/*/Contents/Home",
)


class JavaNotFoundError(RuntimeError):
    """No Java runtime of the required version was found."""


def parse_java_version(text: str) -> int | None:
    """The feature release (``8``, ``17``, ``25``) of a version string: ``1.8.0_292``, ``17.0.15``, ``25``."""
    match = re.search(r'(?:version\s+|JAVA_VERSION=)?"?(\d+)(?:\.(\d+))?', text)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:  # "1.8.0_292" is Java 8
        return int(match.group(2))
    return major


def java_version(home: str | os.PathLike) -> int | None:
    """The Java version of the installation folder ``home``, or None when it holds no Java."""
    home = Path(home)
    release = home / "release"
    if release.is_file():
        for line in release.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("JAVA_VERSION="):
                return parse_java_version(line.split("=", 1)[1])
    java = home / "bin" / ("java.exe" if os.name == "nt" else "java")
    if not java.is_file():
        return None
    try:
        result = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version\s+"([^"]+)"', result.stderr + result.stdout)
    return parse_java_version(match.group(1)) if match else None


def _path_java_home() -> str | None:
    java = shutil.which("java")
    if not java:
        return None
    home = Path(os.path.realpath(java)).parent.parent  # .../bin/java → ...
    return str(home)


def _candidates(search_patterns: Iterable[str]) -> list[str]:
    found: list[str] = []
    for pattern in search_patterns:
        for path in sorted(glob.glob(os.path.expanduser(pattern))):
            real = os.path.realpath(path)
            if os.path.isdir(real) and real not in found:
                found.append(real)
    return found


def find_java_home(
    min_version: int = MIN_JAVA_VERSION,
    search_patterns: Iterable[str] | None = None,
    use_environment: bool = True,
) -> str:
    """The installation folder of a Java ≥ ``min_version``; :class:`JavaNotFoundError` says what was
    found instead and how to provide one.

    Args:
        search_patterns: glob patterns of JDK folders (default :data:`SEARCH_PATTERNS`).
        use_environment: look at ``BERTAPPROX_JAVA_HOME``, ``JAVA_HOME`` and the ``java`` on ``PATH`` first.
    """
    seen: list[str] = []  # "where: version" of every candidate looked at
    if use_environment:
        for variable in ("BERTAPPROX_JAVA_HOME", "JAVA_HOME"):
            home = os.environ.get(variable)
            if not home:
                continue
            version = java_version(home)
            if version is not None and version >= min_version:
                return os.path.realpath(home)
            seen.append(f"{variable}={home} is {_describe(version)}")
        home = _path_java_home()
        if home:
            version = java_version(home)
            if version is not None and version >= min_version:
                return home
            seen.append(f"'java' on PATH ({home}) is {_describe(version)}")
    patterns = SEARCH_PATTERNS if search_patterns is None else tuple(search_patterns)
    best: tuple[int, str] | None = None
    for home in _candidates(patterns):
        version = java_version(home)
        if version is None:
            continue
        if version >= min_version and (best is None or version > best[0]):
            best = (version, home)
        elif version < min_version:
            seen.append(f"{home} is Java {version}")
    if best is not None:
        return best[1]
    looked = "; ".join(seen) if seen else "no Java installation found"
    raise JavaNotFoundError(
        f"Pyserini needs Java {min_version} or newer, and none was found ({looked}; also searched "
        f"{', '.join(patterns) or 'no folders'}). Install a JDK {min_version}+ (e.g. Temurin, or your system's "
        f"openjdk-{min_version}-jdk-headless package) and set JAVA_HOME (or BERTAPPROX_JAVA_HOME) to its folder."
    )


def _describe(version: int | None) -> str:
    return "not a Java installation" if version is None else f"Java {version}, too old"


def configure_java(min_version: int = MIN_JAVA_VERSION, **kwargs) -> str:
    """Find a Java ≥ ``min_version`` (see :func:`find_java_home`) and set ``JAVA_HOME`` and ``PATH`` for
    this process, before Pyserini starts its JVM. Returns the folder."""
    home = find_java_home(min_version, **kwargs)
    os.environ["JAVA_HOME"] = home
    bin_dir = os.path.join(home, "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[:1] != [bin_dir]:
        os.environ["PATH"] = bin_dir + (os.pathsep + path if path else "")
    return home
