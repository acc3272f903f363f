"""``python -m opsdag validate [PATH] [--kind KIND]``: check spec files without Airflow.

PATH (default: the include directory, ``opsdag.paths.include_dir()``) is one of

- an include directory: its ``services/``, ``databases/`` and ``runbooks/`` are checked
  (other folders such as ``sandbox/`` are not specs and are left alone);
- one kind's directory (``include/services``): its name tells the kind;
- one spec file (``include/services/demo-api.yaml``): its directory's name tells the
  kind, or ``--kind`` does for a file kept elsewhere.

Every problem is printed on stdout as ``file: field: problem``, and a count on stderr;
the exit code is 1. Without problems, one line ``OK: 2 services, 1 database, 1 runbook
in include/`` and exit code 0. A PATH that does not exist, or whose kind cannot be told,
is a usage error: a message on stderr and exit code 2.

Besides each file on its own, the check covers what spans files, exactly as the DAG
files load them (:func:`opsdag.spec.loader.load_kind`): two files declaring the same
name (``x.yaml`` and ``x.yml``), and runbook steps naming a service that has no spec in
the sibling ``services/`` directory. The same name in two kinds (a service and a
runbook both called ``checkout``) is allowed: their DAG ids differ by prefix.

Nothing here imports Airflow: the check runs in a fraction of a second, in CI or in a
pre-commit hook.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsdag.cli import EXIT_OK, EXIT_PROBLEMS, UsageError

# the same names as opsdag.spec.loader.KINDS (a test checks it), without importing pydantic
# before a command needs it
KIND_NAMES = ("services", "databases", "runbooks")
_SINGULAR = {"services": "service", "databases": "database", "runbooks": "runbook"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check spec files and print file: field: problem lines",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        metavar="PATH",
        help="include directory, one kind's directory or one spec file (default: the include directory)",
    )
    parser.add_argument(
        "--kind",
        choices=KIND_NAMES,
        help="the kind of the specs under PATH, when its directory name does not tell",
    )
    parser.set_defaults(run=run)


@dataclass
class Result:
    """What a validation found: problems, and per kind how many files were checked."""

    where: str
    files: dict[str, int] = field(default_factory=dict)
    errors: list[Any] = field(default_factory=list)  # opsdag.spec.loader.SpecError

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        counts = ", ".join(_count(n, _SINGULAR[kind], kind) for kind, n in self.files.items())
        if self.ok:
            return f"OK: {counts} in {self.where}"
        total = sum(self.files.values())
        bad = len({e.file for e in self.errors})
        problems = _count(len(self.errors), "problem", "problems")
        return f"FAILED: {problems} in {bad} of {_count(total, 'file', 'files')} ({counts}) in {self.where}"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def run(args: argparse.Namespace) -> int:
    result = validate(args.path, args.kind)
    for error in result.errors:
        print(error)
    if result.ok:
        print(result.summary())
        return EXIT_OK
    print(result.summary(), file=sys.stderr)
    return EXIT_PROBLEMS


def validate(path: Path | None = None, kind: str | None = None) -> Result:
    """Check the specs at ``path`` (see the module's docstring); raises ``UsageError``."""
    from opsdag import paths

    target = Path(path) if path is not None else paths.include_dir()
    if not target.exists():
        raise UsageError(f"{target} does not exist")
    if target.is_dir():
        return _validate_directory(target, kind)
    return _validate_file(target, kind)


def _validate_directory(directory: Path, kind: str | None) -> Result:
    from opsdag.spec.loader import load_kind

    present = [k for k in KIND_NAMES if (directory / k).is_dir()]
    if directory.name in KIND_NAMES and (kind is None or kind == directory.name):
        include, kinds = directory.parent, [directory.name]  # one kind's directory
    elif present:
        include, kinds = directory, [kind] if kind else present  # an include directory
        if kind and kind not in present:
            raise UsageError(f"{directory} has no {kind}/ directory")
    elif kind:
        include, kinds = None, [kind]  # a directory of specs of the kind given
    else:
        raise UsageError(
            f"{directory} holds no specs: it is not a services/, databases/ or runbooks/ "
            "directory and has none of them; pass such a directory, a spec file, or --kind"
        )
    result = Result(where=_shown(directory, trailing_slash=True))
    for k in kinds:
        kind_dir = include / k if include is not None else directory
        loaded = _load_kind_dir(kind_dir, k) if include is None else load_kind(include, k)
        result.files[k] = len(_spec_files(kind_dir))
        result.errors.extend(loaded.errors)
        if k == "runbooks":
            result.errors.extend(check_service_references(loaded.specs, loaded.files, kind_dir))
    return result


def _load_kind_dir(directory: Path, kind: str) -> Any:
    """Like ``load_kind`` for a directory not named after its kind (``--kind``)."""
    from opsdag.spec.loader import KINDS, Loaded, SpecError, load_file

    loaded: Any = Loaded()
    for path in _spec_files(directory):
        spec, errors = load_file(path, KINDS[kind], _shown(path))
        loaded.errors.extend(errors)
        if spec is None:
            continue
        if spec.name in loaded.specs:
            other = _shown(loaded.files[spec.name])
            loaded.errors.append(
                SpecError(_shown(path), "name", f"{spec.name!r} is already defined in {other}")
            )
            continue
        loaded.specs[spec.name] = spec
        loaded.files[spec.name] = path
    return loaded


def _validate_file(file: Path, kind: str | None) -> Result:
    from opsdag.spec.loader import KINDS, load_file

    if file.suffix not in {".yaml", ".yml"}:
        raise UsageError(f"{file} is not a spec file: spec files end in .yaml or .yml")
    kind = kind or (file.parent.name if file.parent.name in KIND_NAMES else None)
    if kind is None:
        raise UsageError(
            f"cannot tell the kind of {file}: its directory {file.parent.name!r} is not one of "
            f"{', '.join(KIND_NAMES)}; move it there or pass --kind"
        )
    spec, errors = load_file(file, KINDS[kind], _shown(file))
    result = Result(where=_shown(file), files={kind: 1}, errors=list(errors))
    if spec is not None and kind == "runbooks":
        result.errors.extend(check_service_references({spec.name: spec}, {spec.name: file}, file.parent))
    return result


def check_service_references(specs: dict[str, Any], files: dict[str, Path], runbooks_dir: Path) -> list[Any]:
    """Runbook steps that name a service (``rollback_release``, ``scale``, ...) need its spec.

    A service exists when ``services/<name>.yaml`` (or ``.yml``) sits next to the runbooks'
    directory, valid or not (a broken service spec is reported on its own). Runbooks
    outside a ``runbooks/`` directory, or without a ``services/`` next to it, are not
    checked.
    """
    from opsdag.spec.loader import SpecError

    services_dir = runbooks_dir.parent / "services"
    if runbooks_dir.name != "runbooks" or not services_dir.is_dir():
        return []
    known = sorted({p.stem for p in _spec_files(services_dir)})
    errors = []
    for name, spec in specs.items():
        for i, step in enumerate(spec.steps):
            service = getattr(step, "service", None)
            if service is not None and service not in known:
                errors.append(
                    SpecError(
                        _shown(files[name]),
                        f"steps[{i}].service",
                        f"no service {service!r} in {_shown(services_dir, trailing_slash=True)}"
                        f" (known: {', '.join(known) or 'none'})",
                    )
                )
    return errors


def _spec_files(directory: Path) -> list[Path]:
    from opsdag.spec.loader import spec_files

    return spec_files(directory) if directory.is_dir() else []


def _shown(path: Path, trailing_slash: bool = False) -> str:
    """A path relative to the working directory when it is below it, else absolute."""
    absolute = path.resolve()
    try:
        shown = str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(absolute)
    if trailing_slash and not shown.endswith("/"):
        shown = "./" if shown == "." else shown + "/"
    return shown
