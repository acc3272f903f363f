"""Where a ``PostgresServer``'s ``data/`` and ``run/`` really live when root runs it.

As root, the server runs as the ``postgres`` OS user, which must be able to traverse
every directory above ``data/`` and ``run/``. Where it cannot - typically pytest's
``/tmp/pytest-of-root``, which is 0700 and which every new pytest session resets to 0700
- ``data/`` and ``run/`` are symlinks to a directory under ``<tmp>/opsdag-postgres/``
and the server is given the real paths. ``remove_relocated`` deletes that directory.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from opsdag.backups.pg_server import PgServerError, blocking_parent

RELOCATION_ROOT = "opsdag-postgres"
LINKS = ("data", "run")


def server_root(directory: Path, user: pwd.struct_passwd | None) -> Path:
    """Where data/ and run/ really live: ``directory``, or a relocated one."""
    data_dir = directory / "data"
    if user is None:
        return directory
    if data_dir.is_symlink():  # relocated before: stay there
        return data_dir.resolve().parent
    if data_dir.is_dir() or blocking_parent(directory, user) is None:
        return directory
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / RELOCATION_ROOT / digest


def prepare_dirs(directory: Path, user: pwd.struct_passwd | None, chown: Callable[[Path], None]) -> None:
    """Create ``directory``, and data/ and run/ (0700, the server user's) where they belong."""
    directory.mkdir(parents=True, exist_ok=True)
    root = server_root(directory, user)
    if user is not None:
        for path in (root.parent, root) if root != directory else (root,):
            path.mkdir(mode=0o711, exist_ok=True)
            os.chmod(path, 0o711)
        blocker = blocking_parent(root, user)
        if blocker is not None:
            raise PgServerError(
                f"PostgreSQL runs as OS user {user.pw_name!r}, which cannot enter {blocker}; "
                f"put {directory} under a directory it can traverse"
            )
    for name in LINKS:
        link, target = directory / name, root / name
        target.mkdir(mode=0o700, exist_ok=True)
        os.chmod(target, 0o700)
        chown(target)
        if root != directory and not (link.is_symlink() and link.resolve() == target):
            link.unlink(missing_ok=True)
            link.symlink_to(target, target_is_directory=True)


def remove_relocated(directory: Path) -> None:
    """Delete the relocated data/ and run/ (if any) and their links, keeping ``directory``."""
    data_dir = directory / "data"
    if data_dir.is_symlink():
        shutil.rmtree(data_dir.resolve().parent, ignore_errors=True)
        for name in LINKS:
            (directory / name).unlink(missing_ok=True)
