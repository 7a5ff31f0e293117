#!/usr/bin/env bash
# Download and convert every dataset of the reproduction into verl parquet files:
#   deepscaler_train.parquet, dapo_math_17k_train.parquet (RL), math500.parquet (validation),
#   aime2024.parquet, aime2025.parquet, hmmt2025.parquet (benchmarks).
#   bash run_scripts/prepare_data.sh [--limit N]
# Environment: DATA_DIR (default $HOME/data/tapo). Keep it outside the repository: some of these
# datasets carry non-commercial licences (see each dataset card) and none of them is committed.
# One source from a local copy instead of the hub:
#   python -m recipe_tapo.data.prepare --source aime2025 --local aime_2025.jsonl --out "$DATA_DIR/aime2025.parquet"
set -euo pipefail

DATA_DIR=${DATA_DIR:-$HOME/data/tapo}

python -m recipe_tapo.data.prepare --source all --out-dir "$DATA_DIR" "$@"
ls -l "$DATA_DIR"
