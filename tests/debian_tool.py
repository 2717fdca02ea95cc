"""A command from a Debian package, installed on first use where the suite runs as root.

promtool (package `prometheus`) and chromium (package `chromium`) are not
Python packages: a test that needs one asks `need`, which installs the
package with apt-get when the command is missing and the suite runs as
root, and otherwise skips the test, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

_tried: dict[str, str] = {}  # package -> why it could not be installed


def need(command: str, package: str, *also: str) -> str:
    """The path of `command`, installing Debian's `package` (and `also`) if
    needed; skips the test if that is impossible."""
    found = shutil.which(command)
    if found:
        return found
    if package not in _tried:
        _tried[package] = _install(package, *also)
    found = shutil.which(command)
    if found is None:
        pytest.skip(f"{command} is not installed and Debian's {package} package could not be installed: {_tried[package]}")
    return found


def _install(*packages: str) -> str:
    if os.geteuid() != 0:
        return "the suite does not run as root"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:  # perhaps no package lists yet
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900, check=False)
    return "" if done.returncode == 0 else f"apt-get install {' '.join(packages)} exited {done.returncode}: {done.stderr.strip()[-300:]}"
