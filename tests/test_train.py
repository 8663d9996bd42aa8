"""Training on tiny synthetic photos: config checks, data purity, checkpoints, resume, DDP.

Everything runs on CPU with a width-4, depth-3 U-Net on 32 px crops, one thread per process.
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.multiprocessing as mp
from PIL import Image
from safetensors.torch import load_file

from tilecolor.core.errors import ConfigError
from tilecolor.model import data
from tilecolor.model.checkpoint import load_generator
from tilecolor.train import HELP, TrainConfig, check_distributed, lr_at, main, train


def _write_photos(directory: Path, n: int = 6, tiff: bool = True) -> Path:
    """n small color photos of different sizes; one is a tiled TIFF, one a JPEG."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 40 + 8 * i, 64 - 4 * i
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([(xx * 4 + 30 * i) % 256, (yy * 5) % 256, (xx + yy) * 3 % 256], axis=-1)
        rgb = np.clip(rgb + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
        if i == 1 and tiff:
            tifffile.imwrite(directory / f"p{i}.tif", rgb, tile=(16, 16))
        else:
            Image.fromarray(rgb).save(directory / f"p{i}.{'jpg' if i == 3 else 'png'}")
    return directory


def _config(tmp_path: Path, out: str = "run", **overrides) -> TrainConfig:
    values = dict(data=str(tmp_path / "photos"), out=str(tmp_path / out), crop=32, gen_width=4,
                  gen_depth=3, gen_max_width=16, disc_width=8, batch_size=4, steps=4,
                  gan_start_step=2, val_count=2, log_every=1, ckpt_every=2, sample_every=2,
                  num_threads=1, seed=3, device="cpu")
    return TrainConfig(**(values | overrides))


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    torch.set_num_threads(1)


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    base = {"data": "d", "out": "o"}
    with pytest.raises(ConfigError, match="bogus"):
        TrainConfig.from_dict(base | {"bogus": 1})
    with pytest.raises(ConfigError, match="steps must be int"):
        TrainConfig.from_dict(base | {"steps": "10"})
    with pytest.raises(ConfigError, match="multiple of 2\\*\\*gen_depth"):
        TrainConfig.from_dict(base | {"crop": 100})
    assert TrainConfig.from_dict(base | {"lr": 1}).lr == 1.0
    decay = TrainConfig(data="d", out="o", steps=10, decay_steps=4, lr=1.0)
    assert [lr_at(decay, s) for s in (0, 6, 7, 9)] == [1.0, 1.0, 0.75, 0.25]
    with pytest.raises(SystemExit) as exc:
        main(["--data", "d", "--out", "o", "--bogus", "1"])
    assert exc.value.code == 2
    toml = tmp_path / "c.toml"
    toml.write_text('data = "d"\nout = "o"\nlearning_rate = 0.1\n')
    assert main(["--config", str(toml)]) == 2  # unknown key in the file: usage error


def test_sync_bn_needs_nccl_and_batch_must_split():
    cfg = TrainConfig(data="d", out="o", sync_bn=True, batch_size=4)
    with pytest.raises(ConfigError, match="nccl"):
        check_distributed(cfg, "gloo", 2)
    check_distributed(cfg, "gloo", 1)
    check_distributed(cfg, "nccl", 2)
    with pytest.raises(ConfigError, match="multiple of world_size"):
        check_distributed(TrainConfig(data="d", out="o", batch_size=4), "gloo", 3)


def test_split_is_deterministic_and_spread(tmp_path):
    paths = [Path(f"{c}.jpg") for c in "abcdefghij"]
    train_paths, val_paths = data.split_photos(paths, 4)
    assert [p.stem for p in val_paths] == ["b", "d", "g", "i"]
    assert sorted(train_paths + val_paths) == paths
    with pytest.raises(ConfigError, match="val_count"):
        data.split_photos(paths, 10)


def test_tiff_photos_are_read_by_region(tmp_path):
    photos_dir = _write_photos(tmp_path / "photos")
    tif = data.Photo(photos_dir / "p1.tif")
    whole = tifffile.imread(photos_dir / "p1.tif")
    np.testing.assert_array_equal(tif.read(5, 7, 20, 30), whole[5:25, 7:37] / np.float32(255))


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(TrainConfig):
        assert HELP[f.name] in text.replace("- ", "-"), f.name


def test_checkpoints_samples_and_metrics(tmp_path):
    _write_photos(tmp_path / "photos")
    cfg = _config(tmp_path)
    final = {}
    train(cfg, callback=lambda step, g, d: final.update(g.state_dict()))
    out = Path(cfg.out)
    model, meta = load_generator(out / "last")
    assert meta["training"] == asdict(cfg) and meta["step"] == 4
    assert meta["tile"] == 32 and meta["stride"] == 16
    train_paths, _ = data.split_photos(data.list_photos(cfg.data), cfg.val_count)
    assert meta["data_fingerprint"] == data.fingerprint(train_paths)
    assert {"val_de", "val_de_gray", "val_de_hinted", "val_de_bilinear", "val_ab_l1",
            "val_gray_ab_l1", "l1_ab", "g_gan", "d"} <= set(meta["metrics"])
    assert meta["input_planes"] == ["L", "hint_a", "hint_b", "hint_mask"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, final[name]), name
    best = json.loads((out / "best" / "checkpoint.json").read_text())
    assert best["step"] in (2, 4)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert "g_gan" not in lines[1] and "g_gan" in lines[2] and "val_de" in lines[3]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000002.png",
                                                                  "step_000004.png"]
    # one row per validation photo: its whole view, gray | model | truth
    assert Image.open(out / "samples" / "step_000004.png").size == (3 * 32, 2 * 32)
    assert Image.open(out / "losses.png").size[0] > 0
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg)


def test_resume_equals_straight_run(tmp_path):
    """4 steps straight == 2 steps, stop, resume to 4: G, D and both optimizers' states are
    bitwise equal. The GAN phase starts at step 1 and dropout is on, so the discriminator,
    its optimizer and the per-step seeding are all exercised across the stop."""
    _write_photos(tmp_path / "photos")
    kw = dict(gan_start_step=1, gen_dropout=0.5, ckpt_every=2)
    train(_config(tmp_path, "straight", **kw))
    train(_config(tmp_path, "resumed", **(kw | {"steps": 2})))
    train(_config(tmp_path, "resumed", **kw, resume=True))
    a = load_file(tmp_path / "straight" / "last" / "train_state.safetensors")
    b = load_file(tmp_path / "resumed" / "last" / "train_state.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("opt_d.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key

    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "s_per_step"} for x in lines]

    assert losses("straight") == losses("resumed")


def _flat_parameters(g: torch.nn.Module, d: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in [*g.parameters(), *d.parameters()]]).numpy()


def _ddp_worker(rank: int, world: int, port: int, config: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    snapshots: dict[str, np.ndarray] = {}
    train(TrainConfig(**config),
          callback=lambda step, g, d: snapshots.update({str(step): _flat_parameters(g, d)}))
    np.savez(Path(out) / f"rank{rank}.npz", **snapshots)


def test_ddp_two_ranks_match_one_rank_with_accumulation(tmp_path):
    """Two gloo ranks with 2 crops each == one process accumulating two micro-batches of 2.

    Why not one process with a plain batch of 4: batch norm normalizes with per-rank batch
    statistics, so 2 ranks x 2 crops is a different function than 1 x 4, and SyncBatchNorm
    (which would make them equal) does not run on gloo. Accumulation over the same two
    2-crop shards reproduces the DDP computation exactly: the same crops per micro-batch
    (shard = rank * accum + a), the same dropout seeds, the same batch statistics, and the
    gradient mean over the two micro-batches is what DDP's all-reduce averages. Only the
    float summation order differs, hence allclose. Across the two ranks, the parameters
    must be bitwise identical after every step. The GAN phase (from step 1) runs D through
    DDP too; dropout is on.
    """
    _write_photos(tmp_path / "photos")
    kw = dict(steps=3, gan_start_step=1, gen_dropout=0.5, ckpt_every=3, sample_every=3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = asdict(_config(tmp_path, "ddp", **kw))
    mp.spawn(_ddp_worker, args=(2, port, cfg, str(tmp_path)), nprocs=2, join=True)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]

    single: dict[str, np.ndarray] = {}
    train(_config(tmp_path, "single", accum=2, **kw),
          callback=lambda step, g, d: single.update({str(step): _flat_parameters(g, d)}))
    initial = _flat_parameters(*_fresh_models(_config(tmp_path)))
    for step in ("1", "2", "3"):
        np.testing.assert_array_equal(ranks[0][step], ranks[1][step])
        np.testing.assert_allclose(ranks[0][step], single[step], rtol=1e-4, atol=1e-6)
        assert not np.allclose(single[step], initial)  # the comparison is not vacuous
    assert (tmp_path / "ddp" / "last" / "checkpoint.json").is_file()


def _fresh_models(cfg: TrainConfig):
    from tilecolor.model.nets import PatchDiscriminator, UNetGenerator

    torch.manual_seed(cfg.seed)
    return UNetGenerator(cfg.generator_spec()), PatchDiscriminator(width=cfg.disc_width)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_training_resumes_exactly_when_deterministic(tmp_path):
    """The CUDA path (bf16 autocast, GAN phase) trains, writes a checkpoint that loads, and
    with --deterministic a resumed run equals a straight one bitwise."""
    _write_photos(tmp_path / "photos", tiff=False)
    kw = dict(device="cuda", deterministic=True, gan_start_step=1, ckpt_every=2)
    result = train(_config(tmp_path, "straight", **kw))
    assert math.isfinite(result["val_de"])
    train(_config(tmp_path, "resumed", **(kw | {"steps": 2})))
    train(_config(tmp_path, "resumed", **kw, resume=True))
    a = load_file(tmp_path / "straight" / "last" / "train_state.safetensors")
    b = load_file(tmp_path / "resumed" / "last" / "train_state.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    model, meta = load_generator(tmp_path / "straight" / "last")
    assert meta["training"]["device"] == "cuda" and meta["step"] == 4
