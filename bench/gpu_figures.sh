#!/usr/bin/env bash
# The GPU figures in one prepared run (BENCHMARKS.md "GPU"): pytest -m gpu, the token-loss
# profile (where the time goes), bench_token_loss, BIG-bench MC and EAP-IG on CUDA.
#
#   bash bench/gpu_figures.sh OUT_DIR [STAGES]     # STAGES: default "test profile tokens bb eap big"
#
# On a GPU image without polars, put its wheels in .whl/ (pip download --python-version of
# that machine); without /usr/share/common-licenses or ../shared/data/bigbench, copies in
# .gpu/licenses and .gpu/bigbench (the device tool carries both folders).
set -uo pipefail
out=${1:?OUT_DIR}; stages=${2:-"test profile tokens bb eap big"}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
[ -d .gpu/licenses ] && export DYNAMICS_BENCH_TEXT_DIR=$PWD/.gpu/licenses
bb=../shared/data/bigbench; [ -d .gpu/bigbench ] && bb=.gpu/bigbench
export PYTHONPATH=${PYTHONPATH:-$PWD}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
py=python3
step() { local name=$1 limit=$2; shift 2; echo "=== $name ($(date +%T), limit ${limit}s): $*"
  timeout "$limit" "$@"; echo "=== $name rc=$? ($(date +%T))"; }
{
  nvidia-smi -L; $py -c "import torch, transformers; print('torch', torch.__version__,
    'transformers', transformers.__version__, torch.cuda.get_device_name())"
  for s in $stages; do case $s in
    test) step "pytest -m gpu" 90 $py -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider ;;
    profile) step "profile 410m" 170 $py -m bench.profile_gpu --shapes 410m --out "$out" ${PROFILE_ARGS:-} ;;
    tokens) step "bench_token_loss" 100 $py -m bench.bench_token_loss --device cuda \
              --dtype bfloat16 --shapes 410m 70m --tokens 131072 --repeats 3 --skip-lm-eval \
              --skip-memory ;;
    bb) for shape in 14m 410m; do step "bench_bigbench $shape" 60 $py -m bench.bench_bigbench \
          --device cuda --dtype bfloat16 --shape $shape --skip-lm-eval --bigbench-dir "$bb" \
          --threads 8; done ;;
    eap) step "bench_eap" 75 $py -m bench.bench_eap --device cuda --shapes pythia-70m \
           pythia-410m --n 16 --batch 8 --steps 5 --threads 8 ;;
    big) step "profile 1.4b" 75 $py -m bench.profile_gpu --shapes 1.4b --skip-compile \
           --repeats 3 --out "$out" ;;
  esac; done
} 2>&1 | tee "$out/log.txt"
