"""Load spec files from include/; every problem becomes ``file: field: problem``.

Loading never raises on a bad file: it returns the good specs and a list of errors, so
that one broken file cannot take down the DAGs of the others. The wording of the
problems is :mod:`opsdag.spec.field_errors`'.

YAML is read with a loader that refuses duplicate keys: PyYAML keeps the last of two
equal keys silently, which would hide a typo'd override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic

import yaml
from pydantic import BaseModel

from opsdag.spec.database import DatabaseSpec
from opsdag.spec.field_errors import SpecError, SpecT, parse_spec
from opsdag.spec.runbook import RunbookSpec
from opsdag.spec.service import ServiceSpec

KINDS: dict[str, type[BaseModel]] = {
    "services": ServiceSpec,
    "databases": DatabaseSpec,
    "runbooks": RunbookSpec,
}


@dataclass
class Loaded(Generic[SpecT]):
    specs: dict[str, SpecT] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)


# --- YAML ---------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses two equal keys in one mapping (merge keys ``<<`` aside)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key {key!r} appears twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """Parse one YAML document; raises ``yaml.YAMLError`` (also for a duplicate key)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def load_file(
    path: Path, model: type[SpecT], shown_as: str | None = None
) -> tuple[SpecT | None, list[SpecError]]:
    shown = shown_as or str(path)
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [SpecError(shown, where, f"not valid YAML: {problem}")]
    except UnicodeDecodeError:
        return None, [SpecError(shown, "(file)", "is not UTF-8 text")]
    except OSError as exc:
        return None, [SpecError(shown, "(file)", f"cannot be read: {exc.strerror}")]
    spec, errors = parse_spec(model, data, shown)
    name = data.get("name") if isinstance(data, dict) else None
    if isinstance(name, str) and name.strip() != path.stem and not any(e.field == "name" for e in errors):
        # reported even when other fields are wrong, so that one run shows every problem
        return None, [
            *errors,
            SpecError(shown, "name", f"{name.strip()!r} must match the file name {path.stem!r}"),
        ]
    return spec, errors


def spec_files(directory: Path) -> list[Path]:
    """The ``*.yaml`` and ``*.yml`` files of a directory, hidden files (editor backups) aside."""
    return sorted(
        p
        for p in directory.glob("*.y*ml")
        if p.suffix in {".yaml", ".yml"} and not p.name.startswith(".") and p.is_file()
    )


def load_kind(include: Path, kind: str) -> Loaded[Any]:
    """Every spec of one kind (``services``, ``databases``, ``runbooks``) under ``include``.

    Two files declaring the same name (``x.yaml`` and ``x.yml``) are an error of the
    second file; the first one is kept.
    """
    model = KINDS[kind]
    loaded: Loaded[Any] = Loaded()
    for path in spec_files(include / kind):
        shown = _display(path)
        spec, errors = load_file(path, model, shown)
        loaded.errors.extend(errors)
        if spec is None:
            continue
        if spec.name in loaded.specs:
            other = _display(loaded.files[spec.name])
            loaded.errors.append(SpecError(shown, "name", f"{spec.name!r} is already defined in {other}"))
            continue
        loaded.specs[spec.name] = spec
        loaded.files[spec.name] = path
    return loaded


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


__all__ = ["KINDS", "Loaded", "SpecError", "load_file", "load_kind", "parse_spec", "read_yaml", "spec_files"]
