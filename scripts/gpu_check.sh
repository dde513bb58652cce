#!/usr/bin/env bash
# The whole GPU check of issues 18 and 19 in one run on a lent GPU machine (the device tool; see
# ../shared/device/README.md): a 3-minute Multi30k training there, test_2016_flickr translated greedy and beam 5 on the
# GPU and on the same machine's CPU, and the benchmark on both devices. Everything it prints and writes lands in $OUT.
#
# Prepare once, here, in the repository root (these folders are git-ignored through .git/info/exclude):
#   printf '/.whl/\n/.gpu-data/\n/.gpu-patch/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash fsspec
#   mkdir -p .gpu-data && cp ../shared/data/multi30k/*.gz .gpu-data/ && cp -r ../shared/device .gpu-patch
# Then run it there with the device tool: command `bash scripts/gpu_check.sh`, carry [".whl", ".gpu-data",
# ".gpu-patch"], timeout_s 600 (it takes about 8 minutes: the training's 3 minutes, then the translations and the
# benchmarks).
set -euo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="$PWD/.gpu-patch:/tmp/site:$PWD" PYTHONUNBUFFERED=1
data=(--set data.path=.gpu-data --set data.cache_dir=/tmp/mt-cache)
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
lscpu | grep -E "Model name|^CPU\(s\)" | tee -a "$OUT/gpu.txt"

run=/tmp/gpu_run
python3 scripts/train.py --config configs/multi30k_en_fr.yaml --out "$run" "${data[@]}" \
  --set training.max_minutes=3 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tee "$OUT/train.log"

for device in cuda cpu; do
  for beam in 1 5; do
    echo "evaluate --device $device --beam $beam" | tee -a "$OUT/evaluate.log"  # it prints its own seconds
    python3 scripts/evaluate.py --checkpoint "$run" --split test --device "$device" --beam "$beam" 2>&1 |
      tee -a "$OUT/evaluate.log"
  done
done

python3 scripts/benchmark.py --config "$run/config.yaml" --checkpoint "$run" --device cuda --json "$OUT/bench_cuda.json" \
  2>&1 | tee "$OUT/bench_cuda.txt"
python3 scripts/benchmark.py --config "$run/config.yaml" --checkpoint "$run" --device cuda --inference \
  --json "$OUT/inference_cuda.json" 2>&1 | tee "$OUT/inference_cuda.txt"
python3 scripts/benchmark.py --config "$run/config.yaml" --checkpoint "$run" --device cpu --steps 10 \
  --json "$OUT/bench_cpu.json" 2>&1 | tee "$OUT/bench_cpu.txt"

# training.compile: auto's trial on this device (issue 25): eager and compiled steps on the run's first batch, and what
# auto decides for the recipe's 28-minute budget. DEVICE=cpu runs the same check on the CPU.
python3 - "${DEVICE:-cuda}" "$run" 2>&1 <<'PY' | tee "$OUT/compile_trial.txt"
import functools, sys, torch
from transformer.checkpoint import read_checkpoint
from transformer.corpus_cache import cached_ids, cached_text
from transformer.data import batch_plan, collate
from transformer.device import choose_compile
from transformer.distributed import Process
from transformer.model import Transformer
from transformer.optimization import step_seconds

device, trained = torch.device(sys.argv[1]), read_checkpoint(sys.argv[2])
config, t = trained.config, trained.config.training
data = cached_ids(config.data, cached_text(config.data, "train"), trained.tokenizer)
batch = collate(data, batch_plan(data, t.batch_tokens, t.seed, 0)[0])
model = Transformer(config.model, trained.tokenizer.vocab_size).to(device)
trial = functools.partial(step_seconds, model, batch, False, t, Process(0, 1, device))
times = {compiled: trial(compiled=compiled) for compiled in (False, True)}
for compiled, seconds in times.items():
    print("compiled" if compiled else "eager   ", " ".join(f"{1e3 * s:,.0f}" for s in seconds), "ms")
print("auto, 28 minutes:", choose_compile("auto", device, lambda s: 28 * 60.0, lambda compiled: times[compiled]))
PY
