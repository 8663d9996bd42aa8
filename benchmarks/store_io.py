"""CPU cost of the working store's RGB array per 2048^2 block, for chunk shapes and codecs.
Prints a Markdown table.

    python benchmarks/store_io.py [--repeat 3]

Writes 8 blocks of a photo's RGB (a validation photo resized to 2048^2) into an (2048,
8 * 2048, 3) uint8 array the way a map task does (one block at a time, array reopened), then
reads it back the way the TIFF writer does (strips of 256 rows, full width). CPU is the
process's (zarr's I/O loop and thread pool included), per block.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "data" / "photos" / "plasma-Kite.jpg"
BLOCK, BLOCKS = 2048, 8


def measure(path: Path, block: np.ndarray, chunks: tuple[int, int, int], codec) -> tuple:
    import zarr

    from tilecolor.io.omezarr import WRITE_ALL

    shutil.rmtree(path, ignore_errors=True)
    zarr.create_array(str(path), shape=(BLOCK, BLOCK * BLOCKS, 3), chunks=chunks,
                      dtype="uint8", fill_value=0, compressors=codec)
    c0 = time.process_time()
    for i in range(BLOCKS):
        array = zarr.open_array(str(path), mode="r+").with_config(WRITE_ALL)
        array[:, i * BLOCK : (i + 1) * BLOCK] = block
    c1 = time.process_time()
    array = zarr.open_array(str(path), mode="r")
    for y in range(0, BLOCK, 256):
        np.asarray(array[y : y + 256])
    c2 = time.process_time()
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return 1000 * (c1 - c0) / BLOCKS, 1000 * (c2 - c1) / BLOCKS, block.nbytes * BLOCKS / size


def main() -> None:
    from PIL import Image

    from tilecolor.engine.store import _FAST

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with Image.open(PHOTO) as im:
        block = np.ascontiguousarray(np.asarray(im.convert("RGB").resize((BLOCK, BLOCK))))
    variants = {"256 x 1024, lz4": ((256, 1024, 3), _FAST),
                "256 x 2048, lz4": ((256, 2048, 3), _FAST),
                "256 x 1024, raw": ((256, 1024, 3), None),
                "256 x 2048, raw": ((256, 2048, 3), None)}
    rows: dict[str, list[tuple]] = {name: [] for name in variants}
    work = Path(tempfile.mkdtemp(prefix="tc-store-io-"))
    try:
        for _ in range(args.repeat):  # rounds interleaved: the machine's speed drifts
            for name, (chunks, codec) in variants.items():
                rows[name].append(measure(work / "rgb", block, chunks, codec))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nRGB working array, per {BLOCK}x{BLOCK} block, {args.repeat} rounds "
          f"(CPU ms of the whole process)\n")
    print("| chunks, codec | write (cpu-ms) | read (cpu-ms) | ratio |\n|---|---|---|---:|")
    for name, runs in rows.items():
        print(f"| {name} | {' / '.join(f'{w:.0f}' for w, _, _ in runs)} | "
              f"{' / '.join(f'{r:.0f}' for _, r, _ in runs)} | {runs[0][2]:.2f} |")


if __name__ == "__main__":
    main()
