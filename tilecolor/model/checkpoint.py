"""Generator checkpoints: safetensors weights plus JSON metadata, loaded without unpickling.

A checkpoint is a directory::

    generator.safetensors   the generator's state dict (float32 or float16 tensors)
    checkpoint.json         format, architecture (its name in nets.ARCHITECTURES and its
                            arguments), input planes, color convention, tile/stride,
                            training config and metrics, and the SHA-256 of
                            generator.safetensors

Loading checks the digest (tampering, truncation), the architecture and every tensor's name
and shape, and raises :class:`CheckpointError` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tilecolor.core.errors import CheckpointError, ConfigError
from tilecolor.core.planes import L_ONLY, check_planes
from tilecolor.io.atomic import write_atomic

# torch is imported where weights are loaded: the driver of `tilecolor run` checks a
# checkpoint without it (see check_weights)
if TYPE_CHECKING:
    import torch

    from tilecolor.model.nets import UNetGenerator

FORMAT = "tilecolor-checkpoint"
VERSION = 1
WEIGHTS = "generator.safetensors"
META = "checkpoint.json"
COLOR = {"space": "CIELab D65", "input": "L/50 - 1", "output": "ab/110 (tanh)"}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_generator(directory: str | Path, model: UNetGenerator, *, tile: int, stride: int,
                   half: bool = False, extra: dict[str, Any] | None = None,
                   planes: tuple[str, ...] | list[str] | None = None) -> Path:
    """Write ``model`` as a checkpoint directory; returns the directory.

    ``half`` stores float16 weights (loaded back as float32), halving the file size.
    ``extra`` (training config, step, data fingerprint, metrics...) goes into the JSON.
    ``planes`` names the generator's input planes (:mod:`tilecolor.core.planes`), one per input
    channel; None is ``L_ONLY``, for a generator of one input channel only.
    """
    from safetensors.torch import save

    channels = model.spec.in_channels
    if planes is None:
        if channels != 1:
            raise ConfigError(f"a generator of {channels} input channels needs its input "
                              f"planes named (planes=...)")
        planes = L_ONLY
    planes = check_planes(planes)
    if len(planes) != channels:
        raise ConfigError(f"{len(planes)} input planes {list(planes)} for a generator of "
                          f"{channels} input channels")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    blob = save(state)
    write_atomic(directory / WEIGHTS, blob)
    meta = {"format": FORMAT, "version": VERSION, "architecture": model.spec.to_dict(),
            "input_planes": list(planes), "color": COLOR, "tile": tile, "stride": stride,
            "dtype": "float16" if half else "float32",
            "sha256": hashlib.sha256(blob).hexdigest(), **(extra or {})}
    write_atomic(directory / META, (json.dumps(meta, indent=2) + "\n").encode())
    return directory


def resolve(path: str | Path) -> Path:
    """Accept the directory, its checkpoint.json or its generator.safetensors."""
    path = Path(path)
    if path.is_file() and path.name in (META, WEIGHTS):
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(path, "no such checkpoint directory")
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Parse and check checkpoint.json (not the weights)."""
    path = resolve(path)
    try:
        meta = json.loads((path / META).read_text())
    except FileNotFoundError as e:
        raise CheckpointError(path, f"missing {META}") from e
    except OSError as e:  # a directory or unreadable file in its place
        raise CheckpointError(path, f"cannot read {META} ({e.strerror})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(path, f"{META} is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(path, f"{META} is not a {FORMAT} file")
    if meta.get("version") != VERSION:
        raise CheckpointError(path, f"unsupported checkpoint version {meta.get('version')!r}")
    for key in ("architecture", "sha256", "tile"):
        if key not in meta:
            raise CheckpointError(path, f"{META} lacks {key!r}")
    if not isinstance(meta["architecture"], dict):
        raise CheckpointError(path, f"architecture in {META} must be a table, got "
                                    f"{meta['architecture']!r:.40}")
    if not isinstance(meta["sha256"], str):
        raise CheckpointError(path, f"sha256 in {META} must be a string, got "
                                    f"{meta['sha256']!r:.40}")
    for key in ("tile", "stride"):
        value = meta.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(path, f"{key} in {META} must be a positive integer, got "
                                        f"{value!r:.40}")
    meta["input_planes"] = list(_input_planes(path, meta))
    return meta


def _input_planes(path: Path, meta: dict[str, Any]) -> tuple[str, ...]:
    """The checked ``input_planes`` of ``meta`` (absent: ``L_ONLY``, every checkpoint
    written before hints were planes), one per input channel of the architecture."""
    planes = meta.get("input_planes", list(L_ONLY))
    if not isinstance(planes, list) or not all(isinstance(p, str) for p in planes):
        raise CheckpointError(path, f"input_planes in {META} must be a list of names, got "
                                    f"{planes!r:.60}")
    try:
        planes = check_planes(planes)
    except ConfigError as e:
        raise CheckpointError(path, str(e)) from e
    channels = meta["architecture"].get("in_channels", 1)
    if channels != len(planes):
        raise CheckpointError(path, f"input_planes {list(planes)} in {META} do not match the "
                                    f"architecture's in_channels={channels!r:.40}")
    return planes


def input_planes(meta: dict[str, Any]) -> tuple[str, ...]:
    """The input planes of a checkpoint's metadata (as :func:`read_metadata` returns it)."""
    return tuple(meta["input_planes"])


def _check_digest(path: Path, meta: dict[str, Any], digest: str) -> None:
    if digest != meta["sha256"]:
        raise CheckpointError(path, f"{WEIGHTS} does not match the sha256 in {META} "
                                    f"(truncated or modified): {digest[:12]} != "
                                    f"{str(meta['sha256'])[:12]}")


def check_weights(path: str | Path) -> str:
    """Cheap checks of a checkpoint without torch: metadata, the weights' SHA-256 against
    it (tampering, truncation) and the safetensors header. Returns the digest.

    :func:`load_generator` does these and also checks the architecture and every tensor's
    name and shape; the pipeline runs it on its workers before any image is submitted.
    """
    from safetensors import SafetensorError, safe_open

    path = resolve(path)
    meta = read_metadata(path)
    try:
        digest = file_digest(path / WEIGHTS)
    except FileNotFoundError as e:
        raise CheckpointError(path, f"missing {WEIGHTS}") from e
    except OSError as e:
        raise CheckpointError(path, f"cannot read {WEIGHTS} ({e.strerror})") from e
    _check_digest(path, meta, digest)
    try:
        with safe_open(str(path / WEIGHTS), framework="numpy") as f:
            if not list(f.keys()):
                raise CheckpointError(path, f"{WEIGHTS} holds no tensors")
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(path, f"{WEIGHTS} is not a valid safetensors file ({e})") from e
    return digest


def load_generator(path: str | Path, device: str | torch.device = "cpu"
                   ) -> tuple[UNetGenerator, dict[str, Any]]:
    """Load a checkpoint's generator in eval mode, float32, on ``device``."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from tilecolor.model.nets import build_generator, spec_from_dict

    path = resolve(path)
    meta = read_metadata(path)
    try:
        blob = (path / WEIGHTS).read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(path, f"missing {WEIGHTS}") from e
    except OSError as e:
        raise CheckpointError(path, f"cannot read {WEIGHTS} ({e.strerror})") from e
    digest = hashlib.sha256(blob).hexdigest()
    _check_digest(path, meta, digest)
    try:
        spec = spec_from_dict(meta["architecture"])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(path, f"bad architecture in {META}: {e}") from e
    try:
        state = load(blob)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(path, f"{WEIGHTS} is not a valid safetensors file ({e})") from e
    model = build_generator(spec)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(path, f"weights do not match the architecture: missing "
                                    f"{missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(path, f"tensor {name} has shape {tuple(tensor.shape)}, "
                                        f"architecture wants {tuple(expected[name].shape)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.to(device).eval(), meta


def default_checkpoint() -> Path:
    """The model shipped with tilecolor (inside the wheel, or models/ in a source checkout)."""
    package = Path(__file__).resolve().parents[1]  # tilecolor/, where the wheel puts _models
    for candidate in (package / "_models" / "default", package.parent / "models" / "default"):
        if (candidate / META).is_file():
            return candidate
    raise CheckpointError(package / "_models" / "default",
                          "the bundled default model is missing from this installation")
