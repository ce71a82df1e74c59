"""Reading operator files strictly: YAML that is text, finite, unambiguous, and errors in one line.

Every configuration the project reads (bot configs, deployment files, the devnet file) goes
through :func:`load_yaml` and then a pydantic model. What is refused, each with one line naming
the file and, where there is one, the key path (``markets[0].id``):

- a missing file, a directory, a file that is not UTF-8 text (binary, or another encoding);
- YAML that does not parse (line and column given), a key written twice in one mapping;
- a non-finite number anywhere (``.nan``, ``.inf``: a NaN compares false with every bound, so a
  check written as ``value > limit`` would let it through);
- through the models: unknown keys (``extra="forbid"``: a misspelt ``min_anwser`` is an error, not
  a silently dropped bound), strings where booleans belong (``"false"`` is truthy in Python).

:func:`validation_message` turns a pydantic ``ValidationError`` into that one line, with a
"did you mean" for a misspelt key.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigFileError(ValueError):
    """A configuration file that cannot be used; the message is one line naming file and key."""


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys refused, no NaN/inf, frozen, strict
    types (``"false"`` is not a boolean, ``"1"`` not an integer; an integer is a valid float)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


# ---------------------------------------------------------------------------------------------
# Files


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; raises :class:`ConfigFileError` for anything else."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigFileError(f"{p}: no such {what}") from None
    except IsADirectoryError:
        raise ConfigFileError(f"{p}: is a directory, not a {what}") from None
    except PermissionError:
        raise ConfigFileError(f"{p}: permission denied") from None
    except OSError as exc:
        raise ConfigFileError(f"{p}: cannot read ({exc.strerror or exc})") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ConfigFileError(f"{p}: binary data (a NUL byte at offset {nul}), not a text {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(
            f"{p}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str | int | float | bool) and key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` (``source`` names it in errors); refuses non-finite numbers."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "cannot parse"
        raise ConfigFileError(f"{source}: invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{source}: invalid YAML: {one_line(str(exc))}") from None
    bad = first_non_finite(data)
    if bad is not None:
        path, value = bad
        raise ConfigFileError(f"{source}: {path or 'the document'}: {value} is not a finite number")
    return data


def load_yaml(path: str | Path, what: str = "config file") -> Any:
    """Read and parse a YAML file strictly (see the module's docstring)."""
    return parse_yaml(read_text(path, what), str(path))


def first_non_finite(data: Any, path: str = "") -> tuple[str, float] | None:
    """The key path and value of the first NaN or infinity in a parsed document, if any."""
    if isinstance(data, float) and not math.isfinite(data):
        return path, data
    if isinstance(data, Mapping):
        for key, value in data.items():
            found = first_non_finite(value, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(data, Sequence) and not isinstance(data, str | bytes):
        for i, value in enumerate(data):
            found = first_non_finite(value, f"{path}[{i}]")
            if found:
                return found
    return None


# ---------------------------------------------------------------------------------------------
# Validation errors


def one_line(text: str) -> str:
    """``text`` on one line (newlines become "; ")."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def key_path(loc: Sequence[str | int]) -> str:
    """``("markets", 0, "id")`` as ``markets[0].id``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside ``annotation`` (``X``, ``X | None``, ``list[X]``, ``A | B``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _models_in(arg)
    return found


def _walk(model: type[BaseModel] | None, loc: Sequence[str | int]) -> tuple[list, Any]:
    """``loc`` without pydantic's union tags, and the model it ends in (``None`` if none)."""
    out: list[str | int] = []
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            out.append(part)
            continue
        members = _models_in(current) if current is not None else []
        owner = next((m for m in members if part in m.model_fields), None)
        if owner is not None:
            out.append(part)
            current = owner.model_fields[part].annotation
            continue
        # A discriminated union's tag (``calibrated``): step into the member it names.
        tagged = [m for m in members if any(f.default == part for f in m.model_fields.values())]
        if len(members) > 1 and tagged:
            current = tagged[0]
            continue
        out.append(part)
        current = None
    return out, current


def _fields_at(model: type[BaseModel] | None, loc: Sequence[str | int]) -> list[str]:
    """The field names of the sub-model of ``model`` that ``loc`` points into."""
    _, current = _walk(model, loc)
    members = _models_in(current) if current is not None else []
    return list(members[0].model_fields) if len(members) == 1 else []


def _describe(error: Mapping[str, Any], model: type[BaseModel] | None) -> str:
    loc, _ = _walk(model, tuple(error.get("loc", ())))
    kind = error.get("type", "")
    where = key_path(loc)
    value = error.get("input")
    if kind == "union_tag_invalid":
        ctx = error.get("ctx") or {}
        name = str(ctx.get("discriminator", "kind")).strip("'")
        tags = ctx.get("expected_tags")
        return f"{where}: {name} {ctx.get('tag')!r} is not one of {tags}"
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        name = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = f" (known keys: {', '.join(allowed)})" if allowed and not close else ""
        return f"{where}: unknown key{hint}{listing}"
    if kind == "missing":
        return f"{where}: required"
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    if kind.startswith(("bool", "int", "float", "string", "finite", "decimal", "literal")):
        message += f", got {value!r}"
    return f"{where}: {message}" if where else message


def validation_message(
    exc: ValidationError, source: str, model: type[BaseModel] | None = None
) -> str:
    """One line for a pydantic error: ``source: key.path: what is wrong`` (+ how many more)."""
    errors = exc.errors(include_url=False)
    # A misspelt key explains the "required" error of the key it was meant to be: name it first.
    errors.sort(key=lambda e: e.get("type") != "extra_forbidden")
    first = one_line(_describe(errors[0], model))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {first}{more}"


def validate(model: type[BaseModel], data: Any, source: str) -> Any:
    """``model.model_validate(data)``; errors as one-line :class:`ConfigFileError`."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigFileError(f"{source}: expected a mapping of keys at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(validation_message(exc, source, model)) from None


__all__ = [
    "ConfigFileError",
    "StrictModel",
    "first_non_finite",
    "key_path",
    "load_yaml",
    "one_line",
    "parse_yaml",
    "read_text",
    "validate",
    "validation_message",
]
