"""Typed records from JSON: dataclasses checked field by field against their annotations.

``load(cls, data)`` builds ``cls`` from parsed JSON and refuses anything that does not fit
its type hints (a list where a record belongs, ``null`` for a required string, a string
where an integer belongs, an unknown enum value), naming the path of the offending value:
``graphs[0].inputs[1].shape[2]: -3 is negative``. Supported annotations: ``int``,
``float``, ``str``, ``bool``, ``None``, unions, ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]``, enums and dataclasses (fields with defaults may be missing). A
dataclass may define ``_check(self, path)`` for rules beyond types; it raises
:class:`SchemaError` too. Standard library only.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, TypeVar, Union

T = TypeVar("T")


class SchemaError(ValueError):
    def __init__(self, path: str, message: str):
        super().__init__(f"{path or 'the document'}: {message}")
        self.path = path


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


def load(cls: type[T], data: Any, path: str = "") -> T:
    """``data`` (parsed JSON) as an instance of ``cls``, checked; :class:`SchemaError` names what does not fit."""
    return _convert(cls, data, path)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, path)
            except SchemaError as e:
                errors.append(e)
        expected = " or ".join(_name(o) for o in options)
        raise SchemaError(path, f"{_describe(value)} is not {expected}")
    if hint is type(None):
        if value is not None:
            raise SchemaError(path, f"{_describe(value)} is not null")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise SchemaError(path, f"{_describe(value)} is not true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(path, f"{_describe(value)} is not an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaError(path, f"{_describe(value)} is not a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SchemaError(path, f"{_describe(value)} is not a string")
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in hint)
            raise SchemaError(path, f"{_describe(value)} is not one of {allowed}") from None
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise SchemaError(path, f"{_describe(value)} is not a list")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        items = [_convert(item, v, _join(path, i)) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(path, f"{_describe(value)} is not an object")
        key_type, item = typing.get_args(hint) or (str, Any)
        return {_convert(key_type, k, path): _convert(item, v, _join(path, k)) for k, v in value.items()}
    if hint in (dict, list):
        if not isinstance(value, hint):
            raise SchemaError(path, f"{_describe(value)} is not {'an object' if hint is dict else 'a list'}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _record(hint, value, path)
    raise TypeError(f"schema: unsupported annotation {hint!r} at {path}")


def _record(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise SchemaError(path, f"{_describe(value)} is not an object")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(_join(path, f.name), "is missing")
            continue
        kwargs[f.name] = _convert(hints[f.name], value[f.name], _join(path, f.name))
    record = cls(**kwargs)
    check = getattr(record, "_check", None)
    if check is not None:
        check(path)
    return record


def _name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "an object"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def dump(record: Any) -> Any:
    """A record as JSON-ready data (enums by value, tuples as lists); the inverse of :func:`load`."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: dump(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, enum.Enum):
        return record.value
    if isinstance(record, list | tuple):
        return [dump(v) for v in record]
    if isinstance(record, dict):
        return {k: dump(v) for k, v in record.items()}
    return record
