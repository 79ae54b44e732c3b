"""Load a YAML config, apply overrides, validate, resolve, and dump the result.

Flow: read YAML (keeping each key's file:line) -> migrate legacy keys ->
apply command-line values and `--set key=value` overrides -> fill in the run
name -> validate against the root schema. Every failure is a `ConfigError`
whose message names the dotted key, where it came from, and what to change.
The user's file is only read, never written.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import annotated_types
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from lib.config.schema import LEGACY_KEYS, MERGED_KEYS, MAEConfig, RunConfig
from lib.config.suggestions import (
    RESEARCH_MARKERS_NEEDED,
    is_mapping_of_sections,
    research_markers,
    section_model,
    suggest_key,
)

log = logging.getLogger(__name__)

_DOTTED_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
TOP_LEVEL = "<top level>"
"""What an error message names for a check of the whole config (one across sections)."""
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which key and what to change."""


class ConfigYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 numbers: `1e-4` and `1.5e3` are floats, `24:00:00` stays a string."""


_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
ConfigYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigYamlLoader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^[-+]?(?:0b[01_]+|0x[0-9a-fA-F_]+|0[0-7_]+|0|[1-9][0-9_]*)$"),
    list("-+0123456789"),
)
ConfigYamlLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


ModelT = TypeVar("ModelT", bound=BaseModel)
Sources = dict[str, str]  # dotted key -> where its value came from ("file.yaml:12", "--set ...")


def parse_yaml_value(text: str) -> Any:
    """Parse one override value as a YAML scalar or flow collection (`1e-4`, `[a, b]`, `null`)."""
    try:
        return yaml.load(text, Loader=ConfigYamlLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse value {text!r} as YAML: {err}") from err


def yaml_error(path: Path, err: yaml.YAMLError) -> ConfigError:
    """A one-line ConfigError for a YAML syntax error: file, line, column and the problem."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return ConfigError(f"{path}: invalid YAML{where}: {problem}")


def read_yaml(path: Path) -> tuple[dict[str, Any], Sources]:
    """The mapping in `path` (read with ConfigYamlLoader) and {dotted key: "file:line"} of every key in it."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    loader = ConfigYamlLoader(path.read_text(encoding="utf-8"))
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        data = {} if node is None else loader.construct_document(node)
    except yaml.YAMLError as err:
        raise yaml_error(path, err) from err
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    sources: Sources = {}
    if node is not None:
        _collect_marks(node, "", path, sources)
    return data, sources


def _collect_marks(node: yaml.MappingNode, prefix: str, path: Path, sources: Sources) -> None:
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        where = f"{path}:{key_node.start_mark.line + 1}"
        if key in sources:
            raise ConfigError(f"{where}: duplicate key {key!r} (first given at {sources[key]})")
        sources[key] = where
        if isinstance(value_node, yaml.MappingNode):
            _collect_marks(value_node, f"{key}.", path, sources)


def _pop_dotted(data: dict[str, Any], key: str) -> tuple[bool, Any]:
    *parents, leaf = key.split(".")
    for part in parents:
        data = data.get(part)
        if not isinstance(data, dict):
            return False, None
    if leaf not in data:
        return False, None
    return True, data.pop(leaf)


def _set_dotted(data: dict[str, Any], key: str, value: Any, origin: str) -> None:
    *parents, leaf = key.split(".")
    for depth, part in enumerate(parents):
        child = data.get(part)
        if child is None:  # absent, or a section left empty in YAML
            child = data[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"{origin}: cannot set {key!r}: {where!r} is a value, not a section")
        data = child
    data[leaf] = value


def _has_dotted(data: dict[str, Any], key: str) -> bool:
    *parents, leaf = key.split(".")
    for part in parents:
        data = data.get(part)
        if not isinstance(data, dict):
            return False
    return leaf in data


def _get_dotted(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _warn_deprecated(message: str) -> None:
    log.warning(message)
    warnings.warn(message, DeprecationWarning, stacklevel=4)


def migrate_legacy(data: dict[str, Any], sources: Sources) -> None:
    """Move legacy keys found in `data` to their current place. Given next to its current key, a
    renamed key is ignored (the current key wins); a merged one (MERGED_KEYS) must agree with it."""
    moved: dict[str, str] = {}  # current key -> the legacy key moved there
    for old, new in LEGACY_KEYS.items():
        found, value = _pop_dotted(data, old)
        if not found:
            continue
        where = sources.pop(old, "config")
        if new in moved:
            _warn_deprecated(f"{where}: ignoring deprecated {old!r} because {moved[new]!r} is also given; "
                             f"remove both and write {new!r}")
        elif _has_dotted(data, new):
            _check_merged_value(old, value, where, new, _get_dotted(data, new), sources.get(new, "config"))
            _warn_deprecated(f"{where}: ignoring deprecated {old!r} because {new!r} is also given; remove {old!r}")
        else:
            _warn_deprecated(f"{where}: {old!r} is deprecated; write it as {new!r}")
            _set_dotted(data, new, value, where)
            sources[new], moved[new] = where, old


def _check_merged_value(old: str, value: Any, where: str, new: str, current: Any, current_where: str) -> None:
    """A merged legacy key given beside its current key with another value: refused."""
    if old in MERGED_KEYS and value != current:
        raise ConfigError(
            f"{where}: {old} = {value!r} disagrees with {new} = {current!r} ({current_where}); they are one "
            f"setting now: remove {old} and keep the value you mean in {new}"
        )


def _current_key(key: str, origin: str) -> str:
    new = LEGACY_KEYS.get(key)
    if new is None:
        return key
    _warn_deprecated(f"{origin}: {key!r} is deprecated; use {new!r}")
    return new


def _split_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not _DOTTED_KEY.match(key):
        raise ConfigError(f"invalid override {item!r}: expected section.key=value, e.g. training.lr=3e-4")
    return key, parse_yaml_value(text)


def _apply(data: dict[str, Any], sources: Sources, key: str, value: Any, origin: str) -> None:
    key = _current_key(key, origin)
    _set_dotted(data, key, value, origin)
    sources[key] = origin


def _default_run_name(root: type[RunConfig]) -> str:
    return f"{root.kind}_{dt.datetime.now(dt.timezone.utc):%Y%m%d_%H%M%S}"


def load_config(
    path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    root: type[RunConfig] = MAEConfig,
    cli: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Resolve a run config: YAML file (or defaults), then `cli` {dotted_key: value}, then `--set` overrides.

    The result has every default filled in and a run name. Raises ConfigError.
    """
    from lib.config.extends import read_config_file  # extends builds on read_yaml

    data, sources = read_config_file(Path(path)) if path is not None else ({}, {})
    markers = research_markers(sources, root)  # unknown keys here, so the file cannot validate
    if len(markers) >= RESEARCH_MARKERS_NEEDED:
        raise ConfigError(f"{path}: this looks like a research-code config ({', '.join(markers[:3])}, ...); "
                          f"run `python -m lib.config migrate {path}`")
    migrate_legacy(data, sources)
    for key, value in (cli or {}).items():
        _apply(data, sources, key, value, "command line")
    for item in overrides:
        key, value = _split_override(item)
        _apply(data, sources, key, value, f"--set {item}")
    checkpoint = data.get("checkpoint")
    if checkpoint is None or (isinstance(checkpoint, dict) and checkpoint.get("run_name") is None):
        _set_dotted(data, "checkpoint.run_name", _default_run_name(root), "run name")
    return validate_data(data, root, sources, origin=str(path) if path is not None else "defaults")


def validate_data(
    data: Mapping[str, Any], root: type[ModelT], sources: Sources | None = None, *, origin: str = "config"
) -> ModelT:
    """Validate plain data against any pydantic model, turning its errors into one readable ConfigError.

    `sources` ({dotted key: where it was given}, as from read_yaml) puts file:line into the message.
    """
    try:
        return root.model_validate(_empty_sections_as_mappings(data, root))
    except ValidationError as err:
        problems = _describe_errors(err, root, sources or {})
        raise ConfigError(f"invalid config ({origin}):\n" + "\n".join(f"  - {p}" for p in problems)) from None


def _empty_sections_as_mappings(data: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """A copy of `data` where sections left empty in YAML (`ema:` -> None) become {}."""
    result = dict(data)
    for key, value in data.items():
        field = model.model_fields.get(key)
        section = field.annotation if field is not None else None
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue
        if value is None:
            result[key] = {}
        elif isinstance(value, Mapping):
            result[key] = _empty_sections_as_mappings(value, section)
    return result


def _describe_errors(err: ValidationError, root: type[BaseModel], sources: Sources) -> list[str]:
    """One line per offending key: `key (file:line) = value: what is wrong` (union alternatives joined)."""
    reasons: dict[str, list[str]] = {}
    for error in err.errors():
        unknown = error["type"] == "extra_forbidden"
        key, field, parent = _locate(error["loc"], root, unknown)
        value = error["input"]
        if not unknown:
            key, value = _offending_child(key, value, _reason(error, key, field), sources)
        where = _source_of(key, sources)
        head = key + (f" ({where})" if where else "")
        if unknown:
            reasons.setdefault(head, []).append(f"unknown key; {suggest_key(key, parent, root)}")
            continue
        shown = repr(value)
        head += " = " + (shown if len(shown) <= 80 else shown[:77] + "...")
        reasons.setdefault(head, []).append(_reason(error, key, field))
    return [f"{head}: {' or '.join(dict.fromkeys(texts))}" for head, texts in reasons.items()]


def _locate(loc: tuple, root: type[BaseModel], unknown: bool) -> tuple[str, FieldInfo | None, type[BaseModel] | None]:
    """Dotted key, field info and owning model of a pydantic error location (union tags are skipped)."""
    parts: list[str] = []
    model: type[BaseModel] | None = root
    field: FieldInfo | None = None
    owner: type[BaseModel] | None = root
    name_follows = False  # the item after a name -> section mapping (tasks) is a name, e.g. tasks.energy
    for i, item in enumerate(loc):
        if name_follows and isinstance(item, str):
            parts.append(item)
            name_follows = False
        elif model is not None and isinstance(item, str) and item in model.model_fields:
            field, owner = model.model_fields[item], model
            name_follows = is_mapping_of_sections(field.annotation)
            model = section_model(field.annotation)
            parts.append(item)
        elif isinstance(item, int):
            parts[-1] += f"[{item}]"
        elif unknown and i == len(loc) - 1:
            owner = model
            parts.append(str(item))
    return ".".join(parts) or TOP_LEVEL, field, owner


def _source_of(key: str, sources: Sources) -> str | None:
    """Where `key` (or the section holding it, or else a key inside it) was given."""
    key = key.split("[", 1)[0]
    inside = next((where for given, where in sources.items() if given.startswith(f"{key}.")), None)
    while key:
        if key in sources:
            return sources[key]
        key = key.rpartition(".")[0]
    return inside


def _offending_child(key: str, value: Any, reason: str, sources: Sources) -> tuple[str, Any]:
    """For a check of a whole section (e.g. of `tasks` or `model`), the key given inside it that the reason
    names first, and its value; for a check across sections, the dotted key given that it names first;
    else `key` and `value` themselves."""
    if key == TOP_LEVEL:
        named_keys = [(found.start(), given) for given in sources
                      if (found := re.search(rf"(?<![\w.]){re.escape(given)}(?![\w.])", reason))]
        if not named_keys:
            return key, value
        child = min(named_keys)[1]
        return child, _get_dotted(value, child) if _has_dotted(value, child) else None
    depth = key.count(".") + 1
    named = []
    for given in sources:
        leaf = given.rpartition(".")[2]
        if given.startswith(f"{key}.") and given.count(".") == depth:
            found = re.search(rf"(?<!\w){re.escape(leaf)}(?!\w)", reason)
            if found:
                named.append((found.start(), given, leaf))
    if not named:
        return key, value
    _, child, leaf = min(named)
    return child, value.get(leaf) if isinstance(value, Mapping) else value


def _reason(error: Mapping[str, Any], key: str, field: FieldInfo | None) -> str:
    if error["type"] in _RANGE_ERRORS and field is not None:
        return f"out of range; allowed: {_allowed_range(field, key.rpartition('.')[2])}"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return error["msg"]


def _allowed_range(field: FieldInfo, name: str) -> str:
    lower = upper = ""
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Gt):
            lower = f"{bound.gt} < "
        elif isinstance(bound, annotated_types.Ge):
            lower = f"{bound.ge} <= "
        elif isinstance(bound, annotated_types.Lt):
            upper = f" < {bound.lt}"
        elif isinstance(bound, annotated_types.Le):
            upper = f" <= {bound.le}"
    if lower and not upper:  # read "epochs > 0" rather than "0 < epochs"
        bound, _, relation = lower.rstrip().rpartition(" ")
        return f"{name} {'>' if relation == '<' else '>='} {bound}"
    return f"{lower}{name}{upper}"
