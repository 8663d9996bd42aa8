#!/usr/bin/env bash
# One prepared device-lease run (issue 3 item 7, issue 4 item 6): trains two candidate
# default models on the GPU with bf16 autocast (L1 only vs L1 warm-up + cGAN), then times
# the CUDA predict path. Photos travel in .gpu_data/ (git-excluded). Results land in $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
COMMON=(--data .gpu_data/photos --crop 256 --batch-size 16 --gen-width 32 --gen-depth 8
        --gen-max-width 256 --val-count 4 --device cuda --num-workers 7 --steps 9000
        --decay-steps 3000 --ckpt-every 500 --sample-every 1500 --log-every 100 --half)
T=${TRAIN_SECONDS:-280}
timeout "$T" python3 -m tilecolor.train "${COMMON[@]}" --out /tmp/runs/l1 \
    --gan-start-step 1000000 > "$OUT/train_l1.log" 2>&1 &
timeout "$T" python3 -m tilecolor.train "${COMMON[@]}" --out /tmp/runs/gan \
    --gan-start-step 1500 > "$OUT/train_gan.log" 2>&1 &
wait
ls -la /tmp/runs/*/ >> "$OUT/gpu.txt"
best=/tmp/runs/gan/best
python3 -c "from tilecolor.model.checkpoint import load_generator as l; l('$best')" || best=/tmp/runs/l1/best
timeout 100 python3 benchmarks/gpu_throughput.py --checkpoint "$best" \
    --out "$OUT/throughput.md" >> "$OUT/gpu.txt" 2>&1
cd /tmp/runs && tar czf /tmp/ckpts.tgz */best/checkpoint.json */best/generator.safetensors \
    */metrics.jsonl */losses.png 2>>"$OUT/gpu.txt"
split -b 15m /tmp/ckpts.tgz "$OUT/ckpts.tgz.part-"
ls -la "$OUT" >> "$OUT/gpu.txt"
