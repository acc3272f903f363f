"""Pydantic's validation errors rewritten as ``file: field: problem`` lines for people who write YAML.

- a location is walked along the model types, so that the tags pydantic inserts for
  union members (``platform.kubernetes.namespace``, ``steps[1].scale.replicas``,
  ``expect.constrained-str``) are dropped, whatever the names of the tags are;
- a missing or unknown discriminator is reported on the discriminator's own field
  (``platform.kind``, ``steps[1].action``) with the values that are allowed;
- an unknown key says which keys are allowed there, or which one was probably meant;
- the alternatives of a plain union (``str | int | float | bool``) give one line, not one
  line per alternative;
- the usual messages read as plain words ("must be at least 1, not 0").
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from opsdag.spec.common import FieldProblem

SpecT = TypeVar("SpecT", bound=BaseModel)

TOP_LEVEL = "(top level)"


@dataclass(frozen=True)
class SpecError:
    file: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.problem}"


def field_path(loc: tuple[Any, ...]) -> str:
    """``('canary', 'steps', 2, 'weight')`` -> ``canary.steps[2].weight``."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or TOP_LEVEL


# --- walking a location along the model types -------------------------------------------


@dataclass
class _Node:
    """Where a location leads: the cleaned location and the type found there (or None)."""

    loc: tuple[Any, ...]
    type: Any = None
    discriminator: str | None = None
    plain_union: bool = False  # the location went through the alternatives of a plain union


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _unwrap(tp: Any, discriminator: str | None) -> tuple[Any, str | None]:
    """Strip ``Annotated`` (keeping a discriminator found there) and ``None`` from ``X | None``."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            base, *metadata = typing.get_args(tp)
            for meta in metadata:
                if isinstance(meta, FieldInfo) and isinstance(meta.discriminator, str):
                    discriminator = meta.discriminator
            tp = base
            continue
        if _is_union(tp):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) == 1:  # Optional: pydantic adds no location part for it
                tp = members[0]
                continue
        return tp, discriminator


def _tags(model: Any, discriminator: str) -> list[str]:
    info = model.model_fields.get(discriminator) if _is_model(model) else None
    if info is None or typing.get_origin(info.annotation) is not Literal:
        return []
    return [str(v) for v in typing.get_args(info.annotation)]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def union_tags(node: _Node) -> list[str]:
    """The values a discriminated union at ``node`` accepts, in declaration order."""
    if node.discriminator is None or not _is_union(node.type):
        return []
    return [tag for member in typing.get_args(node.type) for tag in _tags(member, node.discriminator)]


def _walk(model: type[BaseModel], loc: tuple[Any, ...], tagless_from: int | None = None) -> _Node:
    """Follow ``loc`` along the types below ``model``; parts from ``tagless_from`` on were
    written by a validator (:class:`FieldProblem`) and never name a union member."""
    tp: Any = model
    discriminator: str | None = None
    clean: list[Any] = []
    plain_union = False
    for i, part in enumerate(loc):
        tp, discriminator = _unwrap(tp, discriminator) if tp is not None else (None, None)
        if tp is not None and _is_union(tp):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if tagless_from is None or i < tagless_from:
                # pydantic names the member it tried: its tag, or its type for a plain union;
                # not a field the user wrote
                plain_union = plain_union or discriminator is None
                tagged = [m for m in members if discriminator and str(part) in _tags(m, discriminator)]
                tp, discriminator = (tagged[0] if tagged else None), None
                continue
            tp = next((m for m in members if _is_model(m) and part in m.model_fields), None)
        clean.append(part)
        discriminator = None
        origin = typing.get_origin(tp)
        if _is_model(tp) and isinstance(part, str) and part in tp.model_fields:
            info = tp.model_fields[part]
            tp = info.annotation
            discriminator = info.discriminator if isinstance(info.discriminator, str) else None
        elif origin in (list, tuple, set, frozenset) and isinstance(part, int):
            tp = typing.get_args(tp)[0] if typing.get_args(tp) else None
        elif origin is dict:
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else None
        else:
            tp = None
    if tp is not None:
        tp, discriminator = _unwrap(tp, discriminator)
    return _Node(tuple(clean), tp, discriminator, plain_union)


# --- plain-words problems ---------------------------------------------------------------


def _shown(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping of keys to values",
    "model_type": "a mapping of keys to values",
    "model_attributes_type": "a mapping of keys to values",
}


def _one_of(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" or {words[-1]}"


def _problem(error: dict[str, Any], node: _Node, parent: _Node) -> str:
    kind, msg, ctx = error["type"], error["msg"], error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        return "required but missing"
    if kind == "extra_forbidden":
        allowed = list(parent.type.model_fields) if _is_model(parent.type) else []
        key = str(node.loc[-1]) if node.loc else ""
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        if close:
            return f"unknown key; did you mean {close[0]!r}?"
        if allowed:
            return f"unknown key; allowed here: {', '.join(allowed)}"
        return "unknown key (check its spelling; unknown keys are not allowed)"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = union_tags(node) or [t.strip("'") for t in str(ctx.get("expected_tags", "")).split(", ") if t]
        what = str(ctx.get("discriminator", "value")).strip("'")
        choices = f"use one of: {', '.join(tags)}" if tags else "see the documentation"
        if kind == "union_tag_not_found":
            return f"required but missing; {choices}"
        tag = value.get(what, ctx.get("tag")) if isinstance(value, dict) else ctx.get("tag")
        return f"{_shown(tag)} is not a known {what}; {choices}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')}, not {_shown(value)}"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, not {_shown(value)}"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "more than 0", not "more than 0.0"
        return f"must be {words} {bound}, not {_shown(value)}"
    if kind in ("too_short", "string_too_short"):
        least = ctx.get("min_length", 1)
        if least == 1:
            return "must not be empty"
        unit = "characters" if kind == "string_too_short" else "items"
        return f"must have at least {least} {unit}"
    if kind in ("too_long", "string_too_long"):
        unit = "characters" if kind == "string_too_long" else "items"
        return f"must have at most {ctx.get('max_length')} {unit}"
    if kind == "string_pattern_mismatch":
        return f"{_shown(value)} does not have the expected form (pattern {ctx.get('pattern')})"
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _errors(model: type[BaseModel], exc: ValidationError, file: str) -> list[SpecError]:
    lines: list[SpecError | tuple[Any, ...]] = []  # a tuple: the place of a plain union, filled below
    alternatives: dict[tuple[Any, ...], tuple[Any, list[str]]] = {}
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        below = (error.get("ctx") or {}).get("error")
        tagless_from = None
        if isinstance(below, FieldProblem):  # a validator pointing at an item below its field
            tagless_from, loc = len(loc), loc + below.loc
        node = _walk(model, loc, tagless_from)
        if node.plain_union and node.type is None and error["type"] in _TYPE_WORDS:
            # one line for all the alternatives of ``str | int | ...`` at the same place
            if node.loc not in alternatives:
                alternatives[node.loc] = (error.get("input"), [])
                lines.append(node.loc)
            words = alternatives[node.loc][1]
            if _TYPE_WORDS[error["type"]] not in words:
                words.append(_TYPE_WORDS[error["type"]])
            continue
        shown_loc = node.loc
        if error["type"] in ("union_tag_invalid", "union_tag_not_found") and node.discriminator:
            shown_loc = (*node.loc, node.discriminator)
        parent = _walk(model, loc[:-1], tagless_from) if loc else node
        lines.append(SpecError(file, field_path(shown_loc), _problem(error, node, parent)))
    out = []
    for line in lines:
        if isinstance(line, tuple):
            value, words = alternatives[line]
            if "a number" in words and "a whole number" in words:
                words.remove("a whole number")
            words = [w.replace("true or false", "true/false") for w in words]
            line = SpecError(file, field_path(line), f"must be {_one_of(words)}, not {_shown(value)}")
        out.append(line)
    return out


def parse_spec(model: type[SpecT], data: Any, file: str) -> tuple[SpecT | None, list[SpecError]]:
    if data is None:
        return None, [
            SpecError(file, TOP_LEVEL, "the file is empty; it must hold a mapping of keys to values")
        ]
    if not isinstance(data, dict):
        return None, [
            SpecError(file, TOP_LEVEL, f"the file must hold a mapping of keys to values, not {_shown(data)}")
        ]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _errors(model, exc, file)
