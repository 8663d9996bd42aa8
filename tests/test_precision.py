"""bf16 against fp32 on the CPU, with the shipped (trained) generator: `--precision auto`
takes bf16 where the CPU has it natively, so the two must agree on what a user sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tilecolor.core.color import compose_rgb, gray_to_input
from tilecolor.model.checkpoint import default_checkpoint
from tilecolor.model.hardware import cpu_has_native_bf16
from tilecolor.model.predict import make_predictor

KITE = Path(__file__).resolve().parents[1] / "examples" / "gray" / "kite.jpg"

pytestmark = pytest.mark.skipif(not cpu_has_native_bf16(),
                                reason="this CPU has no native bf16 (AVX512_BF16 / AMX)")


def test_bf16_matches_fp32_in_rgb_levels():
    gray = np.asarray(Image.open(KITE).convert("L"))[:512, :768]  # uint8 (512, 768)
    tiles = [(y, x) for y in (0, 256) for x in (0, 256, 512)]
    net_in = gray_to_input(gray)
    ckpt = default_checkpoint()
    out = {}
    for precision in ("fp32", "bf16"):
        predict = make_predictor(ckpt, precision=precision, threads=1)
        planes = len(predict.planes)
        batch = np.zeros((len(tiles), planes, 256, 256), np.float32)
        batch[:, 0] = [net_in[y:y + 256, x:x + 256] for y, x in tiles]
        ab = predict(batch)  # (n, 2, 256, 256), ab / 110
        out[precision] = np.stack([
            compose_rgb(gray[y:y + 256, x:x + 256], np.moveaxis(p, 0, -1) * 110, np.uint8)
            for (y, x), p in zip(tiles, ab, strict=True)]).astype(np.int16)
    diff = np.abs(out["bf16"] - out["fp32"])
    print(f"RGB levels bf16 vs fp32: mean {diff.mean():.3f}, max {diff.max()}")
    assert diff.mean() <= 1.0, diff.mean()
    assert diff.max() <= 8, diff.max()
    assert (diff > 0).any()  # the two really ran different arithmetic
