"""``Record``: a frozen dataclass whose metrics.json mapping is its fields by name (the base of every
typed result part, ``ntkdyn.results.types`` and ``ntkdyn.results.parts``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

_OMIT = {"omit_none": True}  # field metadata: the key is written only when the value is not None


def _field(default=None, omit_none: bool = False, **kw):
    return dataclasses.field(default=default, metadata=_OMIT if omit_none else {}, **kw)


def _plain_json(value):
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, tuple):
        return [_plain_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain_json(v) for k, v in value.items()}
    return value


class Record:
    """A frozen dataclass whose metrics.json mapping is its fields by name: nested records through
    their own ``to_json``/``from_json`` (``_NESTED``: field -> record type, or a mapping of them when
    the field's name is in ``_MAPPED``), tuples as lists; fields marked ``omit_none`` are written
    only when they have a value."""

    _NESTED: ClassVar[Mapping[str, type]] = {}
    _MAPPED: ClassVar[tuple[str, ...]] = ()
    _TUPLES: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = _plain_json(value)
        return out

    @classmethod
    def from_json(cls, doc: Mapping):
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in doc:
                continue
            value = doc[f.name]
            nested = cls._NESTED.get(f.name)
            if nested is not None and value is not None:
                if f.name in cls._MAPPED:
                    value = {k: nested.from_json(v) for k, v in value.items()}  # type: ignore[attr-defined]
                else:
                    value = nested.from_json(value)  # type: ignore[attr-defined]
            elif f.name in cls._TUPLES and value is not None:
                value = tuple(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            kwargs[f.name] = value
        return cls(**kwargs)
