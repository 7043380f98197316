"""Files under the learning directory are private to the server's user: the directory 0700, its files 0600.

They hold what clients sent (redacted or not) and the weights learned from it. Modes are set with ``chmod``
rather than a process-wide ``umask``, which would race with other threads creating files.
"""

from __future__ import annotations

import os

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str) -> str:
    """Create ``path`` (and its parents) if absent and make it 0700; returns it."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def private_file(path: str) -> str:
    """Create ``path`` empty if absent, without ever giving it a wider mode, and make it 0600; returns it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    os.chmod(path, FILE_MODE)
    return path


def restrict(path: str) -> None:
    """Make an existing file 0600 (no-op when it does not exist)."""
    if os.path.exists(path):
        os.chmod(path, FILE_MODE)
