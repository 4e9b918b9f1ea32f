#!/bin/bash
# Issue 26's second table: the conditional facades DDPM (labels -> photo, configs/ddpm/facades_conditional.yaml:
# ddpm_small at 64 px, batch 8) with Ho et al.'s recipe (epsilon, linear betas, uniform weighting)
# against other recipes, the same number of steps per run (STEPS, default 500; one U-Net and batch, so
# equal steps are equal CPU-minutes), 2 seeds each, warm-up 100 steps. Scored by sample.py evaluate on
# the validation split (100 pairs): L1 / PSNR / SSIM of one DDIM-50 sample per label map against its
# photo (EDM: Heun-25). One run after another on THREADS threads (default 1); two queues with other
# SEEDS may share one RUNS_DIR.
#   RECIPES: names among paper, v (v-prediction alone), vzsnr (v + zero terminal SNR + min-SNR-5: the config's),
#   minsnr, cosine, edm; default "paper vzsnr".
# Usage: SEEDS="0 1" RECIPES="paper vzsnr" bash bench/ddpm_facades_recipes.sh [RUNS_DIR]
cd "$(dirname "$0")/.."
PY=${PY:-python}
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
R=${1:-runs/ddpm_facades_recipes}
STEPS=${STEPS:-500}
mkdir -p "$R"
C="train.max_steps=$STEPS train.warmup_steps=100 train.validate_every=100000 train.ckpt_every=250 \
  train.mixed_precision=fp32 log.wandb=disabled"
# Every recipe names all of its schedule keys: the config's own (v + zero terminal SNR + min-SNR-5) are reset
P="ddpm.zero_terminal_snr=false ddpm.snr_gamma=null"
declare -A O=(
  [paper]="ddpm.prediction_type=epsilon $P"
  [v]="ddpm.prediction_type=v_prediction $P"
  [minsnr]="ddpm.prediction_type=epsilon ddpm.zero_terminal_snr=false ddpm.snr_gamma=5"
  [vzsnr]="ddpm.prediction_type=v_prediction ddpm.zero_terminal_snr=true ddpm.snr_gamma=5"
  [cosine]="ddpm.prediction_type=epsilon $P ddpm.beta_schedule=squaredcos_cap_v2"
  [edm]="ddpm.formulation=edm ddpm.prediction_type=epsilon $P ddpm.sample_scheduler=heun"
)
for recipe in ${RECIPES:-paper vzsnr}; do  # a misspelt name would train the config's own recipe
  [[ -v O[$recipe] ]] || { echo "unknown recipe $recipe (${!O[*]})"; exit 2; }
done
for s in ${SEEDS:-0 1}; do
  for recipe in ${RECIPES:-paper vzsnr}; do
    name=${recipe}_s$s
    [ -f $R/$name/export/pipeline.json ] || $PY train.py configs/ddpm/facades_conditional.yaml ${O[$recipe]} \
      run.seed=$s $C run.dir=$R/$name > $R/$name.log 2>&1
    echo "$(date +%T) $name rc=$?"
    if [ $recipe = edm ]; then sched="--scheduler heun --steps 25"; else sched="--scheduler ddim --steps 50"; fi
    [ -f $R/$name/eval_val/metrics.json ] || $PY sample.py evaluate $R/$name --split val $sched \
      > $R/$name.eval.log 2>&1
    echo "$(date +%T) evaluate $name rc=$?"
  done
done
echo QUEUE DONE
