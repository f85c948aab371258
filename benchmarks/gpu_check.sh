#!/usr/bin/env bash
# The CUDA paths end to end on a machine with a GPU (the test suite runs on the CPU):
#
#     bash benchmarks/gpu_check.sh [RUNS_FOLDER]        # about 3 minutes on one H100
#
# SimCLR (convnet) with evaluation, MAE (ViT) and MLM (Transformer) at the precision `auto`
# picks (bf16-mixed on GPUs that have it), and FSDP on one GPU stopped and resumed. Each
# step prints the tail of its log: samples/s, precision and rc. Needs Fashion-MNIST and the
# fortunes files where selfsup finds them (see docs/benchmarks.md).
set -u
R=${1:-runs/gpu-check}
mkdir -p "$R"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), 'bf16:', torch.cuda.is_bf16_supported())" || exit 1
status=0
step() {  # title, command...
  local title=$1; shift
  echo "=== $title"
  local t0=$SECONDS
  "$@" > "$R/last.log" 2>&1
  local rc=$?
  grep -E "samples/s|run folder|│" "$R/last.log" | tail -n 6
  echo "--- rc=$rc in $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || status=1
}
S="python -m selfsup pretrain"
step "simclr, 600 steps, linear + kNN" $S --config fashion-mnist-simclr --max-steps 600 --out "$R/simclr" \
  --set eval.seeds=[0] --set eval.label_fractions=[1.0] --set eval.baselines=false
step "mae (vit), 300 steps" $S --config fashion-mnist-mae --max-steps 300 --out "$R/mae" --no-eval
step "mlm (transformer), 300 steps" $S --config fortunes-mlm --max-steps 300 --out "$R/mlm" --no-eval
step "byol under fsdp, 60 steps" $S --config fashion-mnist-byol --strategy fsdp --max-steps 60 \
  --out "$R/fsdp" --no-eval --set train.checkpoint_every=30
step "fsdp resumed to 90 steps" $S --resume "$R/fsdp" --max-steps 90 --no-eval
exit $status
