#!/bin/bash
# Issue 26's DDPM table: unconditional ddpm_small (2.2M) on the CIFAR-10 subset (5,000 train PNGs),
# the same number of steps per run (STEPS, default 500; every recipe trains the same U-Net at the same
# batch, so equal steps are equal CPU-minutes: s/step is in each log), 2 seeds each, warm-up 100 steps:
#   paper      Ho et al.: epsilon, linear betas, uniform loss weighting (configs/ddpm/cifar10_paper.yaml)
#   minsnr     + min-SNR-5 weighting (Hang et al. 2023)
#   vzsnr      v-prediction, zero terminal SNR, trailing timesteps (Lin et al. 2024), + min-SNR-5
#              (configs/ddpm/cifar10.yaml's recipe since this bench)
#   cosine     the cosine schedule (Nichol & Dhariwal 2021; diffusers' squaredcos_cap_v2)
#   edm        Karras et al. 2022 (configs/ddpm/cifar10_edm.yaml)
# Scored by sample.py evaluate on the first IMAGES (default 500) test images: FD_cifarnet / KID_cifarnet
# (and FID / KID when Inception is cached) of as many samples, at DDIM-50 and DPM-Solver++-20 (EDM: Heun-25, 49 network
# evaluations, and EDM's DPM-Solver++-20). One run after another on THREADS threads (default 1).
# Usage: STEPS=500 SEEDS="0 1" bash bench/ddpm_recipes.sh [RUNS_DIR]; logs in RUNS_DIR.
cd "$(dirname "$0")/.."
PY=${PY:-python}
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
R=${1:-runs/ddpm_recipes}
STEPS=${STEPS:-500}
mkdir -p "$R"
C="train.max_steps=$STEPS train.warmup_steps=100 train.validate_every=100000 train.ckpt_every=400 \
  train.mixed_precision=fp32 log.wandb=disabled"
run() { local name=$1; shift; [ -f $R/$name/export/pipeline.json ] || $PY train.py "$@" $C run.dir=$R/$name \
  > $R/$name.log 2>&1; echo "$(date +%T) $name rc=$?"; }
score() { local run=$1 sched=$2 steps=$3
  [ -f $run/eval_${sched}${steps}/metrics.json ] || $PY sample.py evaluate $run --split test --scheduler $sched \
    --steps $steps --max-images ${IMAGES:-500} --output $run/eval_${sched}${steps} > $run.eval_${sched}${steps}.log 2>&1
  echo "$(date +%T) evaluate $(basename $run) $sched $steps rc=$?"; }
# Each run is scored as soon as it is trained, so a queue cut short leaves whole rows. Two queues with
# different SEEDS can share one RUNS_DIR (each scores only its own runs).
both() { local name=$1; shift; run $name "$@"
  if [[ $name == edm_* ]]; then score $R/$name heun 25; score $R/$name dpm 20
  else score $R/$name ddim 50; score $R/$name dpm 20; fi; }
D=configs/ddpm/cifar10_paper.yaml  # the recipes are changes to Ho et al.'s
for s in ${SEEDS:-0 1}; do
  both paper_s$s $D run.seed=$s
  both minsnr_s$s $D run.seed=$s ddpm.snr_gamma=5
  both vzsnr_s$s $D run.seed=$s ddpm.prediction_type=v_prediction ddpm.zero_terminal_snr=true ddpm.snr_gamma=5
  both cosine_s$s $D run.seed=$s ddpm.beta_schedule=squaredcos_cap_v2
  both edm_s$s configs/ddpm/cifar10_edm.yaml run.seed=$s
done
echo QUEUE DONE
