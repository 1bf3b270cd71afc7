"""The locks (bin/lock) pin what the readable requirements name, and everything beneath, with hashes."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"requirements.lock": ["requirements.txt"],
         "requirements-deploy.lock": ["requirements-deploy.txt", "requirements-mlflow.txt"],
         "requirements-test.lock": ["requirements-test.txt", "requirements-deploy.txt"]}


def pins(path: Path, seen=None) -> dict:
    """name -> version of a requirements file's `name==version` lines, following `-r` includes."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            found.update(pins(path.parent / line[3:].strip()))
        elif "==" in line:
            name, version = line.split("==")
            found[re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version.split(";")[0].strip()
    return found


def locked(path: Path) -> dict:
    """name -> (version, number of hashes) of a lock."""
    entries, name = {}, None
    for line in path.read_text().splitlines():
        if match := re.match(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", line, re.I):
            name = match[1].lower().replace("_", "-")
            entries[name] = [match[2], 0]
        elif name and line.strip().startswith("--hash=sha256:"):
            entries[name][1] += 1
    return {name: tuple(entry) for name, entry in entries.items()}


@pytest.mark.parametrize("lock", LOCKS)
def test_a_lock_pins_every_requirement_at_its_version_with_hashes(lock):
    entries = locked(ROOT / lock)
    wanted = {}
    for source in LOCKS[lock]:
        wanted.update(pins(ROOT / source))
    assert "torch" in wanted and "torch" not in entries  # installed first, from the index its build needs
    for name, version in wanted.items():
        if name != "torch":
            assert entries.get(name, (None,))[0] == version, f"{lock}: {name} is not locked at {version}"
    assert all(hashes > 0 for _, hashes in entries.values())
    # torch's own dependencies stay in: the lock installs with --no-deps
    assert {"sympy", "networkx", "filelock", "jinja2"} <= set(entries)
    text = (ROOT / lock).read_text()
    assert "file://" not in text and "--index-url" not in text and "--find-links" not in text


def test_the_locks_agree_on_every_version_they_share():
    test = locked(ROOT / "requirements-test.lock")
    for lock in ("requirements.lock", "requirements-deploy.lock"):
        for name, (version, _) in locked(ROOT / lock).items():
            assert test[name][0] == version, f"{lock} has {name} {version}, requirements-test.lock {test[name][0]}"
