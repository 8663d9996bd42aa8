#!/usr/bin/env bash
# The prepared device run of the CUDA inference path (issue 4 item 6): the CUDA tests, then
# benchmarks/gpu_pipeline.py (generator tiles/s per precision and batch, agreement with the
# CPU, `tilecolor run --device cuda` across worker counts at 268 MP and at 1 GP). Results
# land in $OUT.
#
#   bash benchmarks/gpu_bench.sh prepare   # here: .devcarry/site.tgz, the packages the
#                                          # device image lacks (it has torch, numpy, click...)
#   device run, carry [".devcarry"]:  bash benchmarks/gpu_bench.sh
#
# The device image's python3 is 3.12 and nothing can be installed there from a registry,
# so dask, distributed, zarr (+numcodecs, donfig, crc32c), bokeh, tornado, tifffile and
# imagecodecs travel pre-installed for 3.12 (imagecodecs cut to its deflate, zlib, delta and
# PNG codecs: the whole wheel would not fit the 64 MiB a call may carry). numba and
# llvmlite do not travel: the device image has its own (env.txt records the versions and
# whether tilecolor's compiled kernels load; --kernels-ab adds numpy-path rows).
set -u
if [ "${1:-}" = prepare ]; then
    set -e
    py=${PYTHON:-python3}
    rm -rf .whl .site && mkdir -p .devcarry
    pins=$("$py" -m pip list --format=freeze 2>/dev/null | grep -i -E '^(dask|distributed|zarr|numcodecs|donfig|google-crc32c|tornado|tblib|zict|partd|locket|bokeh|xyzservices|tifffile|imagecodecs)==')
    plat=(--python-version 3.12 --implementation cp --only-binary=:all:
          --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64)
    # shellcheck disable=SC2086
    "$py" -m pip download -q --no-deps "${plat[@]}" -d .whl $pins
    "$py" -m pip install -q --no-deps --no-compile --no-index --target .site "${plat[@]}" .whl/*.whl
    (cd .site/imagecodecs && ls ./*.so | grep -v -E '/_(imcd|shared|shared_cython|zlib|zlibng|deflate|png)\.abi3\.so$' | xargs rm -f)
    (cd .site/imagecodecs.libs && ls | grep -v -E '^(libdeflate|libpng16)' | xargs rm -f)
    rm -rf .site/imagecodecs/licenses
    find .site -name '*.pyi' -delete
    tar czf .devcarry/site.tgz -C .site .
    ls -la .devcarry
    exit 0
fi
export PYTHONUNBUFFERED=1
mkdir -p /tmp/site && tar xzf .devcarry/site.tgz -C /tmp/site || exit 1
export PYTHONPATH=$PWD:/tmp/site
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    nproc; free -g | head -2
    python3 -c "import sys,torch,dask,distributed,zarr,tifffile,numpy,imagecodecs
print(sys.version.split()[0], 'torch', torch.__version__, 'dask', dask.__version__,
      'zarr', zarr.__version__, 'tifffile', tifffile.__version__, 'numpy', numpy.__version__)"
} > "$OUT/env.txt" 2>&1
# a numba that cannot compile the kernels must not sink the run: the numpy paths then
python3 -c "from tilecolor.core import kernels
print('numba', getattr(kernels.numba, '__version__', None), 'kernels', kernels.AVAILABLE)" \
    >> "$OUT/env.txt" 2>&1 \
    || { echo "kernels do not load: TILECOLOR_KERNELS=0" >> "$OUT/env.txt"; export TILECOLOR_KERNELS=0; }
if [ "${GPU_TESTS:-1}" = 1 ]; then
    timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
        tests/test_train.py::test_cuda_bf16_training_resumes_exactly_when_deterministic \
        > "$OUT/pytest.txt" 2>&1
    echo "pytest exit $?" >> "$OUT/pytest.txt"
fi
timeout "${BENCH_TIMEOUT:-360}" python3 benchmarks/gpu_pipeline.py --out "$OUT" \
    --budget "${BENCH_BUDGET:-280}" "$@" > "$OUT/gpu_pipeline.log" 2>&1
echo "gpu_pipeline exit $?" >> "$OUT/gpu_pipeline.log"
tail -c 3000 "$OUT/pytest.txt" 2>/dev/null
cat "$OUT/gpu_pipeline.md"
