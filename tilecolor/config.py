"""Typed job settings for `tilecolor run`, loaded from a TOML job spec and/or CLI flags.

A job spec holds every `run` option at the top level and the cluster in a ``[cluster]``
table. Unknown keys are errors that name the key. Relative paths are taken relative to the
spec file, so a spec works from cron whatever the working directory. CLI flags given on the
command line override the file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from tilecolor.cluster.config import ClusterConfig
from tilecolor.core.blending import Blend
from tilecolor.core.errors import ConfigError
from tilecolor.engine.settings import Settings
from tilecolor.io.formats import OutputFormat
from tilecolor.model.predict import Device, Precision


@dataclass(frozen=True)
class RunConfig:
    """Every option of `tilecolor run`."""

    input: tuple[str, ...] = ()
    output: str | None = None
    checkpoint: str | None = None
    # the engine's settings, with its defaults (Settings states them once)
    tile: int = Settings.tile
    stride: int = Settings.stride
    blend: Blend = Settings.blend
    block: int = Settings.block
    batch_size: int | None = None  #: None: predict.default_batch_size(device)
    render_scale: float = Settings.render_scale
    context: int = Settings.context  #: longer side of the context pass's copy; 0 off
    hint: str | None = None  #: guided mode: a reference image, or a folder of them
    format: OutputFormat | None = None
    overwrite: bool = False
    device: Device = Device.CPU
    precision: Precision = Precision.AUTO  #: predict.resolve_precision: bf16 on CUDA, fp32 on CPU
    report: str | None = None
    max_pixels: int = 2**33  #: larger inputs are rejected (validate.DEFAULT_MAX_PIXELS)
    page: int = 0  #: page of multi-page TIFFs
    allow_output_in_input: bool = False
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        for key, kind in (("blend", Blend), ("format", OutputFormat), ("device", Device),
                          ("precision", Precision)):
            value = getattr(self, key)
            if value is not None or key != "format":
                object.__setattr__(self, key, _enum(kind, key, value))
        if self.context < 0:
            _bad("context", self.context)
        object.__setattr__(self, "input", tuple(self.input))


    def settings(self, resources: dict[str, float] | None = None) -> Settings:
        """The engine's :class:`Settings` of this run (the batch size resolved for the
        device); ConfigError names a value the engine cannot run."""
        from tilecolor.model.predict import default_batch_size

        return Settings(tile=self.tile, stride=self.stride, blend=self.blend, block=self.block,
                        batch_size=default_batch_size(self.device, self.batch_size),
                        render_scale=self.render_scale, context=self.context,
                        resources=resources)


def _bad(key: str, value: Any) -> None:
    raise ConfigError(f"invalid value for {key!r}: {value!r}")


def _enum(kind: type[StrEnum], key: str, value: Any) -> StrEnum:
    """``value`` as a member of ``kind``; ConfigError naming it otherwise."""
    if isinstance(value, StrEnum) and not isinstance(value, kind):
        _bad(key, value)
    try:
        return kind(value)
    except (ValueError, TypeError):
        _bad(key, getattr(value, "value", value))


_TYPES = {int: "an integer", str: "a string", bool: "true or false"}


def _check_types(cls, values: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key {where}{key!r} (known: {', '.join(sorted(known))})")
        want = known[key].type
        if "int" in want and "str" not in want and (not isinstance(value, int)
                                                   or isinstance(value, bool)):
            if not (value is None and "None" in want):
                raise ConfigError(f"{where}{key} must be an integer, got {value!r}")
        if want == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ConfigError(f"{where}{key} must be a number, got {value!r}")
        if want == "bool" and not isinstance(value, bool):
            raise ConfigError(f"{where}{key} must be true or false, got {value!r}")
        if want.startswith("str") and not (isinstance(value, str)
                                           or (value is None and "None" in want)):
            raise ConfigError(f"{where}{key} must be a string, got {value!r}")


def _resolve(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def load_spec(path: str | Path) -> dict[str, Any]:
    """Parse and check a TOML job spec; returns RunConfig keyword arguments."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read job spec ({e.strerror})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e
    cluster = raw.pop("cluster", {})
    if not isinstance(cluster, dict):
        raise ConfigError(f"{path}: [cluster] must be a table")
    if isinstance(raw.get("input"), str):
        raw["input"] = [raw["input"]]
    if "input" in raw and not (isinstance(raw["input"], list)
                               and all(isinstance(s, str) for s in raw["input"])):
        raise ConfigError(f"{path}: input must be a path or glob, or a list of them")
    try:
        _check_types(RunConfig, {k: v for k, v in raw.items() if k != "input"}, "")
        if "job_extra" in cluster and not isinstance(cluster["job_extra"], list):
            raise ConfigError("cluster.job_extra must be a list of strings")
        _check_types(ClusterConfig, {k: v for k, v in cluster.items() if k != "job_extra"},
                     "cluster.")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    base = path.resolve().parent
    if "input" in raw:
        raw["input"] = [_resolve(base, s) for s in raw["input"]]
    for key in ("output", "checkpoint", "report", "hint"):
        if raw.get(key):
            raw[key] = _resolve(base, raw[key])
    for key in ("tls_ca_file", "tls_cert", "tls_key"):
        if cluster.get(key):
            cluster[key] = _resolve(base, cluster[key])
    if cluster:
        raw["cluster"] = cluster
    return raw


def build(spec: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """A RunConfig from a spec (may be empty) with CLI ``overrides`` on top. Cluster keys in
    ``overrides`` are prefixed ``cluster.``."""
    merged = {k: v for k, v in spec.items() if k != "cluster"}
    cluster = dict(spec.get("cluster", {}))
    for key, value in overrides.items():
        if key.startswith("cluster."):
            cluster[key.removeprefix("cluster.")] = value
        else:
            merged[key] = value
    if overrides.get("cluster.address") or (cluster.get("address") and "kind" not in cluster):
        cluster["kind"] = "address"
    return replace(RunConfig(**merged), cluster=ClusterConfig(**cluster))


#: ``run`` options that set a ``[cluster]`` key: option -> key
CLUSTER_OPTIONS = {"workers": "workers", "threads": "threads", "scheduler": "address",
                   "dashboard_address": "dashboard_address", "tls_ca_file": "tls_ca_file",
                   "tls_cert": "tls_cert", "tls_key": "tls_key"}


def run_spec(input: str | Path | list[str | Path] | None = None,  # noqa: A002 - `--input`
             output: str | Path | None = None, *, config: str | Path | None = None,
             cluster: ClusterConfig | dict[str, Any] | None = None,
             **options: Any) -> RunConfig:
    """The RunConfig of ``tilecolor run``'s options (``stride=32``, ``workers=2``,
    ``scheduler=...``), on top of a TOML job spec ``config`` when given; ``cluster`` is a
    ClusterConfig or a ``[cluster]`` table. ConfigError names an unknown option or a bad
    value."""
    known = {f.name for f in fields(RunConfig)} - {"input", "output", "cluster"}
    overrides: dict[str, Any] = {}
    for key, value in options.items():
        if key in CLUSTER_OPTIONS:
            overrides[f"cluster.{CLUSTER_OPTIONS[key]}"] = _plain(value)
        elif key in known:
            overrides[key] = _plain(value)
        else:
            raise ConfigError(f"unknown option {key!r} (known: "
                              f"{', '.join(sorted(known | set(CLUSTER_OPTIONS)))})")
    if isinstance(cluster, ClusterConfig):
        cluster = {f.name: getattr(cluster, f.name) for f in fields(ClusterConfig)}
    for key, value in (cluster or {}).items():
        overrides.setdefault(f"cluster.{key}", value)
    if input is not None:
        items = input if isinstance(input, (list, tuple)) else [input]
        overrides["input"] = [str(p) for p in items]
    if output is not None:
        overrides["output"] = str(output)
    return build(load_spec(config) if config else {}, overrides)


def _plain(value: Any) -> Any:
    """Paths as strings, enums as their values: what a TOML job spec holds."""
    if isinstance(value, Path):
        return str(value)
    return getattr(value, "value", value)
