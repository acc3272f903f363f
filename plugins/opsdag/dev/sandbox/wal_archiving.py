"""The sandbox's WAL archiving: its PostgreSQL archives the demo database's WAL with ``opsdag wal push``.

Settings come from ``include/databases/demo-db.yaml`` (``backup.wal_archive``): with it
enabled the server gets ``archive_mode = on``, ``archive_timeout`` from the spec and an
``archive_command`` that runs ``python -m opsdag wal push --database demo-db`` into the
backups' root, where the backup DAG checks the archive.

As root, the server (and so its archiver) runs as the ``postgres`` OS user, which cannot
enter ``/root``, where pyenv's interpreter behind the project's venv lives. The command then
names an interpreter that user can run (the venv's own when it can, else the system's
``python3`` of the same version): the push needs nothing but the standard library and
``plugins/``. The archive directory is handed to that user.

Where the archive goes: the spec's ``backup.storage`` (a local path), else
``OPSDAG_BACKUPS_DIR``; else, for the sandbox of the state directory, the backups' root
(``opsdag.paths.backups_root()``), and for a sandbox elsewhere (the tests' temporary ones)
``<sandbox>/backups``, so that two sandboxes never archive two clusters under one name.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import sys
from pathlib import Path

from opsdag import paths
from opsdag.backups.pg_server import blocking_parent, hand_over
from opsdag.backups.wal_push import archive_dir
from opsdag.dev.sandbox.state import Layout

DEMO_SPEC = "demo-db"


def demo_wal_spec():
    """``backup`` of include/databases/demo-db.yaml when it archives WAL, else None."""
    from opsdag.spec.database import DatabaseSpec
    from opsdag.spec.loader import load_file

    path = paths.include_dir() / "databases" / f"{DEMO_SPEC}.yaml"
    if not path.exists():
        return None
    spec, errors = load_file(path, DatabaseSpec)
    if errors or spec is None or not spec.backup.wal_archive.enabled:
        return None
    return spec.backup


def archive_root(layout: Layout, storage: str | None = None) -> Path:
    """The backups' root the sandbox's archive goes under (see the module's docstring)."""
    if storage:
        return Path(storage.removeprefix("file://"))
    if os.environ.get("OPSDAG_BACKUPS_DIR"):
        return paths.backups_root()
    if layout.root.resolve() == (paths.state_dir() / "sandbox").resolve():
        return paths.backups_root()
    return layout.root / "backups"


def runnable_by(path: Path, user: pwd.struct_passwd | None) -> bool:
    """``user`` (None: ourselves) can reach and execute ``path``."""
    real = path.resolve()
    if not real.is_file():
        return False
    if user is None:
        return os.access(real, os.X_OK)
    if blocking_parent(real, user) is not None:
        return False
    st = real.stat()
    bit = stat.S_IXUSR if st.st_uid == user.pw_uid else stat.S_IXOTH
    return bool(st.st_mode & bit) or (st.st_gid == user.pw_gid and bool(st.st_mode & stat.S_IXGRP))


def archive_python(user: pwd.struct_passwd | None) -> str:
    """An interpreter the server's OS user can run: ours, else a system python3 of our version."""
    if runnable_by(Path(sys.executable), user):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}", shutil.which(version)):
        if candidate and runnable_by(Path(candidate), user):
            return candidate
    who = user.pw_name if user else "this user"
    raise RuntimeError(
        f"no {version} that the OS user {who!r} can run for archive_command: install {version} "
        "outside /root (Debian: apt-get install python3)"
    )


def archive_command(python: str, root: Path, database: str = DEMO_SPEC) -> str:
    """``archive_command``: the push of ``%p %f`` with its interpreter and ``plugins/`` spelled out."""
    plugins = Path(__file__).resolve().parents[3]
    argv = [python, "-s", "-m", "opsdag", "wal", "push", "--database", database, "--storage", str(root)]
    command = f"PYTHONPATH={shlex.quote(str(plugins))} {shlex.join(argv)}"
    return command.replace("%", "%%") + " %p %f"


def archive_settings(layout: Layout, user: pwd.struct_passwd | None) -> dict[str, str]:
    """postgresql.conf settings of the sandbox's server: archiving when demo-db asks for it."""
    backup = demo_wal_spec()
    if backup is None:
        return {}
    root = archive_root(layout, backup.storage)
    return {
        "archive_mode": "on",
        "archive_command": archive_command(archive_python(user), root),
        "archive_timeout": f"{int(backup.wal_archive.archive_timeout.total_seconds())}s",
    }


def prepare_archive(layout: Layout, user: pwd.struct_passwd | None) -> Path | None:
    """Create the demo database's archive directory, writable by the server's OS user."""
    backup = demo_wal_spec()
    if backup is None:
        return None
    directory = archive_dir(archive_root(layout, backup.storage), DEMO_SPEC)
    directory.mkdir(parents=True, exist_ok=True)
    hand_over(directory, user)
    return directory
