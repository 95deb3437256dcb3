"""Typed settings: frozen dataclasses filled from a YAML file and command-line flags, validated once.

Every command keeps its options in one dataclass. A YAML file may hold a section per command
(`run:`, `export:`, `build:`, `bench:`, ...) or the command's keys at top level. Flags given on the command
line override the file. Errors name the file, the key and what was expected.

Settings files are data from outside: `yaml.safe_load` semantics (no tags), at most 1 MiB, and no aliases
(`*name`): an alias-expansion bomb ("billion laughs": a few hundred bytes that expand to gigabytes when
printed) is refused while parsing. Values quoted in error messages are shortened (`reprlib`), so no message
is large.

    settings = resolve(RunSettings, args, section="run")      # args.config may name a YAML file
"""

from __future__ import annotations

import argparse
import dataclasses
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from cellvit_trt.errors import ConfigError

T = TypeVar("T")

CONFIG_MAX_BYTES = 1 << 20
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 80, 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8


def short(value: Any) -> str:
    """A bounded repr for messages (at most a few hundred characters, whatever the value)."""
    return _SHORT.repr(value)


class _SettingsLoader(yaml.SafeLoader):
    """safe_load, refusing aliases: settings never need them, and expanded ones can be a memory bomb."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in settings files", event.start_mark
            )
        return super().compose_node(parent, index)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list of {_describe(args[0])}" if args else "a list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to `tp` or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        if len(others) == 1:  # Optional[X]: X's own error is the precise one
            return _coerce(value, others[0], where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            items = [_coerce(v, args[0], f"{where}[{i}]") if args else v for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value, where)
    elif tp is Any:
        return value
    raise ConfigError(f"{where}: expected {_describe(tp)}, got {short(value)}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "settings") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {short(unknown)}; valid keys are {sorted(fields)}")
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        obj = cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return obj


def parse_yaml(text: str, where: str) -> dict[str, Any]:
    """A settings mapping from YAML text: plain data only (no tags, no aliases), at most CONFIG_MAX_BYTES."""
    if len(text) > CONFIG_MAX_BYTES:
        raise ConfigError(f"{where}: {len(text)} characters, more than the {CONFIG_MAX_BYTES} allowed")
    try:
        data = yaml.load(text, Loader=_SettingsLoader) or {}  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at top level, got {type(data).__name__}")
    return data


def load_yaml(path: str | Path, section: str | None = None) -> dict[str, Any]:
    """Read a YAML settings file; return `section` if the file has one, else the whole mapping."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > CONFIG_MAX_BYTES:
            raise ConfigError(f"config file {path}: {size} bytes, more than the {CONFIG_MAX_BYTES} allowed")
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path}: not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not readable ({exc})") from exc
    data = parse_yaml(text, f"config file {path}")
    if section is not None and isinstance(data.get(section), dict):
        return data[section]
    return data


def resolve(
    cls: type[T],
    args: argparse.Namespace | dict[str, Any] | None = None,
    section: str | None = None,
    config: str | Path | None = None,
) -> T:
    """Settings from an optional YAML file, overridden by flags that were given (not None).

    `args` may be an argparse Namespace whose flags default to None (so "not given" is visible) and which may
    carry `config`; only names that are fields of `cls` are taken from it.
    """
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    config = config or given.get("config")
    where = "settings"
    data: dict[str, Any] = {}
    if config:
        data.update(load_yaml(config, section))
        where = f"config file {config}" + (f" [{section}]" if section else "")
    names = {f.name for f in dataclasses.fields(cls)}
    data.update({k: v for k, v in given.items() if k in names and v is not None})
    return from_dict(cls, data, where)


def to_dict(settings: Any) -> dict[str, Any]:
    """A JSON/YAML-ready view of settings (Paths become strings), for run summaries."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(settings).items()}


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML file with this command's settings (flags override it)"
    )
