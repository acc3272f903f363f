"""Load spec files from include/ and turn every problem into ``file: field: problem``.

Loading never raises on a bad file: it returns the good specs and a list of errors, so
that one broken file cannot take down the DAGs of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from opsdag.spec.database import DatabaseSpec
from opsdag.spec.runbook import RunbookSpec
from opsdag.spec.service import ServiceSpec

SpecT = TypeVar("SpecT", bound=BaseModel)

KINDS: dict[str, type[BaseModel]] = {
    "services": ServiceSpec,
    "databases": DatabaseSpec,
    "runbooks": RunbookSpec,
}


@dataclass(frozen=True)
class SpecError:
    file: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.problem}"


@dataclass
class Loaded(Generic[SpecT]):
    specs: dict[str, SpecT] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)


def field_path(loc: tuple[Any, ...]) -> str:
    """``('canary', 'steps', 2, 'weight')`` -> ``canary.steps[2].weight``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _problem(error: dict[str, Any]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling; unknown keys are not allowed)"
    if kind == "missing":
        return "required but missing"
    if kind == "union_tag_invalid":
        return msg.replace("Input tag", "value").replace("found using", "for")
    return msg.removeprefix("Value error, ")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the discriminator tags pydantic inserts into union locations (``platform.sandbox.x``)."""
    return tuple(p for p in loc if not (isinstance(p, str) and p in _UNION_TAGS))


_UNION_TAGS = {
    "sandbox", "kubernetes", "replica-ratio", "nginx", "gateway-api",
    "check_metric", "notify", "rollback_release", "restart_instances", "scale", "wait",
}  # fmt: skip


def parse_spec(model: type[SpecT], data: Any, file: str) -> tuple[SpecT | None, list[SpecError]]:
    if not isinstance(data, dict):
        return None, [SpecError(file, "(top level)", "the file must hold a mapping of keys to values")]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        errors = [
            SpecError(file, field_path(_clean_loc(e["loc"])), _problem(e))
            for e in exc.errors(include_url=False)
        ]
        return None, errors


def load_file(path: Path, model: type[SpecT], shown_as: str | None = None) -> tuple[SpecT | None, list[SpecError]]:
    shown = shown_as or str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [SpecError(shown, where, f"not valid YAML: {problem}")]
    except OSError as exc:
        return None, [SpecError(shown, "(file)", f"cannot be read: {exc.strerror}")]
    spec, errors = parse_spec(model, data, shown)
    if spec is not None and getattr(spec, "name", path.stem) != path.stem:
        return None, [SpecError(shown, "name", f"{spec.name!r} must match the file name {path.stem!r}")]
    return spec, errors


def spec_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.y*ml") if p.suffix in {".yaml", ".yml"})


def load_kind(include: Path, kind: str) -> Loaded[Any]:
    """Every spec of one kind (``services``, ``databases``, ``runbooks``) under ``include``."""
    model = KINDS[kind]
    loaded: Loaded[Any] = Loaded()
    for path in spec_files(include / kind):
        shown = _display(path)
        spec, errors = load_file(path, model, shown)
        loaded.errors.extend(errors)
        if spec is not None:
            loaded.specs[spec.name] = spec
            loaded.files[spec.name] = path
    return loaded


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
