from __future__ import annotations

import json
import pickle

import pytest
import torch

from tilecolor.core.errors import CheckpointError
from tilecolor.model.checkpoint import META, WEIGHTS, load_generator, save_generator
from tilecolor.model.nets import GeneratorSpec, UNetGenerator

SPEC = GeneratorSpec(width=4, depth=3, max_width=8)


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    return save_generator(tmp_path / "c", UNetGenerator(SPEC).eval(), tile=64, stride=32,
                          extra={"metrics": {"l1": 0.1}})


def test_round_trip(ckpt):
    model, meta = load_generator(ckpt)
    assert meta["metrics"] == {"l1": 0.1} and meta["tile"] == 64
    torch.manual_seed(0)
    ref = UNetGenerator(SPEC).eval()
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(model(x), ref(x))
    assert not model.training


def test_half_precision_round_trip(tmp_path):
    model = UNetGenerator(SPEC).eval()
    save_generator(tmp_path / "h", model, tile=64, stride=32, half=True)
    loaded, meta = load_generator(tmp_path / "h")
    assert meta["dtype"] == "float16"
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(loaded(x), model(x), atol=2e-3, rtol=1e-2)


def test_accepts_file_paths(ckpt):
    load_generator(ckpt / META)
    load_generator(ckpt / WEIGHTS)


def test_tampered_weights(ckpt):
    blob = bytearray((ckpt / WEIGHTS).read_bytes())
    blob[-1] ^= 0xFF
    (ckpt / WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256"):
        load_generator(ckpt)


def test_truncated_weights(ckpt):
    blob = (ckpt / WEIGHTS).read_bytes()
    (ckpt / WEIGHTS).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated or modified"):
        load_generator(ckpt)


def test_architecture_mismatch(ckpt):
    meta = json.loads((ckpt / META).read_text())
    meta["architecture"]["width"] = 8
    (ckpt / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape"):
        load_generator(ckpt)


@pytest.mark.parametrize("content,match", [("{", "not valid JSON"), ('{"format": "x"}',
                                                                      "not a tilecolor")])
def test_bad_metadata(ckpt, content, match):
    (ckpt / META).write_text(content)
    with pytest.raises(CheckpointError, match=match):
        load_generator(ckpt)


def test_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_generator(tmp_path / "nope")


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_pickle_payload_is_never_executed(tmp_path, monkeypatch):
    """A pickle disguised as the weights file is rejected without unpickling it."""
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil"
    bad.mkdir()
    blob = pickle.dumps({"w": _Payload()})
    (bad / WEIGHTS).write_bytes(blob)
    import hashlib

    (bad / META).write_text(json.dumps({
        "format": "tilecolor-checkpoint", "version": 1, "tile": 64,
        "architecture": SPEC.to_dict(), "sha256": hashlib.sha256(blob).hexdigest()}))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_generator(bad)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("patch,match", [
    ({"architecture": "x"}, "architecture in checkpoint.json must be a table"),
    ({"sha256": 5}, "sha256 in checkpoint.json must be a string"),
    ({"tile": "64"}, "tile in checkpoint.json must be a positive integer"),
    ({"stride": 0}, "stride in checkpoint.json must be a positive integer"),
])
def test_metadata_types_are_checked(ckpt, patch, match):
    meta = {**json.loads((ckpt / META).read_text()), **patch}
    (ckpt / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=match):
        load_generator(ckpt)


@pytest.mark.parametrize("name", [META, WEIGHTS])
def test_directory_in_place_of_a_file(ckpt, name):
    (ckpt / name).unlink()
    (ckpt / name).mkdir()
    with pytest.raises(CheckpointError, match=f"{name}"):
        load_generator(ckpt)


def test_input_planes_are_recorded_and_checked(tmp_path):
    """A checkpoint names its input planes; one per input channel of its architecture."""
    from tilecolor.core.errors import ConfigError
    from tilecolor.core.planes import HINTED, L_ONLY
    from tilecolor.model.checkpoint import read_metadata

    spec4 = GeneratorSpec(width=4, depth=3, max_width=8, in_channels=4)
    path = save_generator(tmp_path / "h", UNetGenerator(spec4).eval(), tile=64, stride=32,
                          planes=HINTED)
    model, meta = load_generator(path)
    assert meta["input_planes"] == list(HINTED) and model.spec.in_channels == 4
    assert model(torch.rand(2, 4, 16, 16)).shape == (2, 2, 16, 16)
    with pytest.raises(ConfigError, match="needs its input planes named"):
        save_generator(tmp_path / "x", UNetGenerator(spec4), tile=64, stride=32)
    with pytest.raises(ConfigError, match="1 input planes"):
        save_generator(tmp_path / "x", UNetGenerator(spec4), tile=64, stride=32, planes=L_ONLY)
    with pytest.raises(ConfigError, match="unsupported input planes"):
        save_generator(tmp_path / "x", UNetGenerator(spec4), tile=64, stride=32,
                       planes=("L", "hint_b", "hint_a", "hint_mask"))
    one = save_generator(tmp_path / "one", UNetGenerator(SPEC), tile=64, stride=32)
    assert read_metadata(one)["input_planes"] == ["L"]


def test_a_checkpoint_without_input_planes_is_l_only(ckpt):
    from tilecolor.model.checkpoint import read_metadata

    meta = json.loads((ckpt / META).read_text())
    del meta["input_planes"]
    (ckpt / META).write_text(json.dumps(meta))
    assert read_metadata(ckpt)["input_planes"] == ["L"]
    assert load_generator(ckpt)[1]["input_planes"] == ["L"]


@pytest.mark.parametrize("patch,match", [
    ({"input_planes": ["L", "hint_a", "hint_b", "hint_mask"]},
     r"do not match the architecture's in_channels=1"),
    ({"input_planes": ["gray"]}, r"unsupported input planes \['gray'\]"),
    ({"input_planes": "L"}, "input_planes in checkpoint.json must be a list"),
    ({"architecture": {**SPEC.to_dict(), "name": "resnet"}},
     r"unknown generator architecture 'resnet'"),
])
def test_bad_input_planes_or_architecture_name(ckpt, patch, match):
    meta = {**json.loads((ckpt / META).read_text()), **patch}
    (ckpt / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=match):
        load_generator(ckpt)


def test_architecture_registry_round_trip():
    from tilecolor.model.nets import ARCHITECTURES, build_generator, spec_from_dict

    spec = spec_from_dict(SPEC.to_dict())
    assert spec == SPEC and ARCHITECTURES["unet"][0] is GeneratorSpec
    assert isinstance(build_generator(spec), UNetGenerator)
    assert GeneratorSpec.from_dict({"width": 4, "depth": 3, "max_width": 8}) == SPEC
