#!/usr/bin/env bash
# TOY=BUILD_DIR measure.sh MODEL OUT (with the project venv on PATH): val 500 x 8 sampled (temperature 1, 192 new tokens) + stats; the probe on test.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export VERL_PLATFORM=cpu HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
model=$1; out=$2; TOY=${TOY:?the pilot build dir}; mkdir -p "$out"
python -m recipe_tapo.evaluation.evaluate --backend hf --model "$model" --data $TOY/data/val.parquet \
    --out-dir "$out/val" --n 8 --k 1 8 --temperature 1.0 --top-p 1.0 --max-new-tokens 192 --seed 0 > "$out/val.log" 2>&1
python docs/toy_experiment/pilots/pilot_stats.py "$out/val/samples.jsonl" $TOY/data/val.parquet | tee "$out/stats.txt"
python -m recipe_tapo.toy.probe build --model "$model" --data $TOY/data/test.parquet --out "$out/probe_set.jsonl" \
    --prefixes 300 --samples 1 --seed 0 --max-new-tokens 192 > "$out/probe_build.log" 2>&1
python -m recipe_tapo.toy.probe run --model "$model" --probe-set "$out/probe_set.jsonl" --out-dir "$out/probe" --k 4 \
    --max-new-tokens 192 --seed 0 > "$out/probe_run.log" 2>&1
python -c "import json,sys; m=json.load(open(sys.argv[1]))['metrics']; [print(k, v) for k, v in m.items()]" "$out/probe/probe_results.json" | tee -a "$out/stats.txt"
