"""Fuzz the input checks: ``probe()`` and the TIFF/PNG/JPEG readers on mutated files.

Every input must either be read or be rejected with ``InputError``. Anything else (another
exception, a hang past ``--timeout``, a crash) is a finding: printed at the end with its
count and first location, and its bytes saved under ``--out`` to reproduce it::

    python benchmarks/fuzz_headers.py --seconds 120            # atheris (coverage-guided)
    python benchmarks/fuzz_headers.py --engine random          # plain mutations, no atheris
    python benchmarks/fuzz_headers.py --replay findings/*.bin  # rerun saved findings

Seeds are small valid files of every layout tilecolor reads, made in memory. Readers only
run on inputs whose header passes ``probe`` with a 4-megapixel limit, and TIFFs are read
by a 64 x 64 region, so memory stays bounded. Not collected by pytest (not in tests/).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

STATS: dict = {"runs": 0, "ok": 0, "rejected": 0, "t0": time.monotonic(), "stop": None}
FINDINGS: Counter = Counter()
EXAMPLES: dict[str, str] = {}
WORK = Path(tempfile.mkdtemp(prefix="fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                             else None))
OUT = Path("fuzz-findings")


def seeds() -> list[bytes]:
    """Small valid files: TIFF layouts, PNG color types and bit depths, JPEG variants."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (24, 40), dtype=np.uint8)
    rgb = np.dstack([g, g[::-1], g[:, ::-1]])
    out = []

    def tiff(data, **kw):
        b = io.BytesIO()
        tifffile.imwrite(b, data, **kw)
        out.append(b.getvalue())

    tiff(g)
    tiff(g.astype(np.uint16) * 257, tile=(16, 16), compression="zlib")
    tiff(g, rowsperstrip=5, compression="lzw", predictor=True)
    tiff(g, bigtiff=True, compression="packbits")
    tiff(rgb, photometric="rgb")
    tiff(np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    tiff(rgb, photometric="ycbcr", compression="jpeg")
    tiff(g, photometric="palette", colormap=np.tile(np.arange(256) * 257, (3, 1)))
    tiff(np.dstack([rgb, g]), photometric="separated")
    tiff(g > 128, photometric="miniswhite")
    tiff((g / 255).astype(np.float32))
    tiff(np.stack([g, g]), photometric="minisblack")
    for mode in ("L", "RGB", "RGBA", "LA", "P", "1"):
        b = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(b, format="PNG")
        out.append(b.getvalue())
    import imagecodecs

    out.append(imagecodecs.png_encode(rgb.astype(np.uint16) * 257))
    for mode, kw in (("L", {}), ("RGB", {"progressive": True}), ("CMYK", {})):
        b = io.BytesIO()
        exif = Image.Exif()
        exif[274] = 6
        Image.fromarray(rgb).convert(mode).save(b, format="JPEG", exif=exif, **kw)
        out.append(b.getvalue())
    return out


def one(data: bytes) -> None:
    """Run probe and a reader on ``data``; record anything that is not an InputError."""
    from tilecolor.core.errors import InputError
    from tilecolor.io.read import probe, read_tiff_region, read_whole
    from tilecolor.io.validate import InputPolicy

    STATS["runs"] += 1
    if STATS["stop"] and time.monotonic() - STATS["t0"] > STATS["stop"]:
        report()  # libFuzzer exits from C, where Python's atexit does not run
        os._exit(1 if FINDINGS else 0)
    ext = {b"II": ".tif", b"MM": ".tif", b"\x89P": ".png"}.get(data[:2], ".jpg")
    path = WORK / f"input{ext}"
    path.write_bytes(data)
    try:
        info = probe(path, InputPolicy(max_pixels=1 << 22), warn=False)
        if info.format == "tiff":
            gray = read_tiff_region(path, 0, min(info.height, 64), 0, min(info.width, 64),
                                    page=info.page)
        else:
            gray = read_whole(info)
        assert gray.dtype == info.dtype, (gray.dtype, info.dtype)
        STATS["ok"] += 1
    except InputError:
        STATS["rejected"] += 1
    except Exception as e:  # a finding: anything that is not a clean rejection
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f for f in reversed(tb) if "tilecolor" in f.filename), tb[-1])
        key = f"{type(e).__name__} at {Path(where.filename).name}:{where.lineno}"
        if key not in EXAMPLES:
            OUT.mkdir(parents=True, exist_ok=True)
            name = OUT / f"{hashlib.sha1(data).hexdigest()[:12]}.bin"
            name.write_bytes(data)
            EXAMPLES[key] = f"{name}: {type(e).__name__}: {str(e)[:160]}"
        FINDINGS[key] += 1


def report() -> None:
    seconds = time.monotonic() - STATS["t0"]
    print(f"\n{STATS['runs']} inputs in {seconds:.0f} s ({STATS['runs'] / seconds:.0f}/s): "
          f"{STATS['ok']} read, {STATS['rejected']} rejected with InputError, "
          f"{sum(FINDINGS.values())} findings in {len(FINDINGS)} places")
    for key, n in FINDINGS.most_common():
        print(f"  {n:6d}  {key}\n          {EXAMPLES[key]}")
    sys.stdout.flush()
    shutil.rmtree(WORK, ignore_errors=True)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few byte flips, overwrites with boundary values, truncations and splices."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if not b:
            break
        i = rng.randrange(len(b))
        if op < 0.4:
            b[i] ^= 1 << rng.randrange(8)
        elif op < 0.7:
            value = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF, 2**31])
            b[i : i + 4] = value.to_bytes(4, rng.choice(["little", "big"]))
        elif op < 0.8:
            del b[rng.randrange(1, len(b) + 1):]
        elif op < 0.9:
            j = rng.randrange(len(b))
            b[i:i] = b[j : j + rng.randint(1, 64)]
        else:
            b[i] = rng.randrange(256)
    return bytes(b)


def run_random(seconds: float, pool: list[bytes]) -> None:
    rng = random.Random(0)
    while time.monotonic() - STATS["t0"] < seconds:
        one(mutate(rng.choice(pool), rng))


def run_atheris(seconds: float, pool: list[bytes], timeout: int) -> None:
    import atheris

    corpus = WORK / "corpus"
    corpus.mkdir()
    for i, s in enumerate(pool):
        (corpus / f"seed{i}").write_bytes(s)
    STATS["stop"] = seconds
    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds) + 60}", f"-timeout={timeout}",
                   "-rss_limit_mb=4096", "-max_len=65536", "-print_final_stats=1",
                   str(corpus)], one)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--engine", choices=["atheris", "random"], default="atheris")
    parser.add_argument("--timeout", type=int, default=20, help="seconds per input")
    parser.add_argument("--out", type=Path, default=OUT, help="where findings are saved")
    parser.add_argument("--replay", nargs="*", type=Path, help="rerun these saved inputs")
    args = parser.parse_args()
    globals()["OUT"] = args.out
    logging.disable(logging.CRITICAL)  # tifffile's warnings on every malformed header
    warnings.simplefilter("ignore")  # and Pillow's
    if args.replay:
        for p in args.replay:
            one(p.read_bytes())
        report()
        return
    if args.engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["tilecolor", "tifffile", "PIL"]):
            import PIL.Image  # noqa: F401
            import tifffile  # noqa: F401

            import tilecolor.io.read  # noqa: F401
            import tilecolor.io.validate  # noqa: F401
        run_atheris(args.seconds, seeds(), args.timeout)
    else:
        run_random(args.seconds, seeds())
        report()


if __name__ == "__main__":
    main()
