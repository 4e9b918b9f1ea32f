#!/bin/bash
# Issue 25's horse2zebra table: CycleGAN, CUT and FastCUT at 128 px (unet_128, ngf 32, batch 1, fp32),
# each with and without DiffAugment, at the same compute per run: CycleGAN CYC_STEPS steps and the
# others the steps that take as long (from bench/unpaired_step_time.py's interleaved s/step ratios,
# given as CUT_STEPS / FAST_STEPS and the +DiffAugment variants), each config's own LR shape
# (constant, then linear decay to 0 at the last step). Equal steps, not a wall-clock budget, so runs
# may share the cores (queues of SEEDS, one thread each) without changing what they compute.
# Scored by sample.py evaluate on the test split (120 horses, 140 zebras): the share of translated
# horses the domain classifier (trained on the real training images) calls zebra, beside its accuracy
# on real test images, for the final export and for every kept checkpoint (the best step, as CUT reports,
# beside the final one; chosen on the test split, so it is an optimistic figure). Usage: SEEDS="0" bash bench/horse2zebra_recipes.sh [RUNS_DIR]; logs in RUNS_DIR.
cd "$(dirname "$0")/.."
PY=${PY:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
R=${1:-runs/horse2zebra_recipes}
mkdir -p "$R"
S="model.generator=unet_128 model.ngf=32 data.load_size=143 data.crop_size=128 train.mixed_precision=fp32 \
  log.wandb=disabled train.validate_every=100000 train.ckpt_every=${CKPT_EVERY:-200} train.keep_checkpoints=${KEEP:-20} $EXTRA"
train() { local name=$1 steps=$2; shift 2; [ -f $R/$name/export/pipeline.json ] || $PY train.py "$@" $S \
  train.max_steps=$steps run.dir=$R/$name > $R/$name.log 2>&1; echo "$(date +%T) $name rc=$?"; }
AUG="train.diffaugment=color,translation,cutout"
CYC=configs/cyclegan/horse2zebra.yaml; CUT=configs/cut/horse2zebra.yaml; FAST=configs/cut/horse2zebra_fastcut.yaml
# RECIPES (default all six; NO_AUG=1 drops the DiffAugment ones; RECIPES, when given, is run as given)
# and BEST, e.g. BEST="cut_ema configs/cut/horse2zebra.yaml": that recipe again with
# train.ema_decay=0.999, at CUT_STEPS (with NO_AUG too). Edit this file only while no queue runs it:
# bash reads a running script from the file as it goes.
ALL="cyclegan cut fastcut"; [ -n "$NO_AUG" ] || ALL="$ALL cyclegan_aug cut_aug fastcut_aug"
for recipe in ${RECIPES:-$ALL}; do  # every name checked before hours of training
  case $recipe in cyclegan|cut|fastcut|cyclegan_aug|cut_aug|fastcut_aug) ;;
    *) echo "unknown recipe $recipe (cyclegan cut fastcut cyclegan_aug cut_aug fastcut_aug)"; exit 2 ;; esac
done
for s in ${SEEDS:-0 1}; do
  for recipe in ${RECIPES:-$ALL}; do
    case $recipe in
      cyclegan) train cyclegan_s$s ${CYC_STEPS:-600} $CYC run.seed=$s ;;
      cut) train cut_s$s ${CUT_STEPS:-1458} $CUT run.seed=$s ;;
      fastcut) train fastcut_s$s ${FAST_STEPS:-1811} $FAST run.seed=$s ;;
      cyclegan_aug) train cyclegan_aug_s$s ${CYC_AUG_STEPS:-593} $CYC run.seed=$s $AUG ;;
      cut_aug) train cut_aug_s$s ${CUT_AUG_STEPS:-1433} $CUT run.seed=$s $AUG ;;
      fastcut_aug) train fastcut_aug_s$s ${FAST_AUG_STEPS:-1783} $FAST run.seed=$s $AUG ;;
    esac
  done
  if [ -n "$BEST" ]; then
    set -- $BEST; train ${1}_s$s ${CUT_STEPS:-1458} $2 run.seed=$s train.ema_decay=0.999
  fi
done
# One domain classifier for every run: trained once (seeded, so every run's would be the same), then its
# cache (keyed by the training files and settings) copied beside each run
for s in ${SEEDS:-0 1}; do
  for run in $R/*_s$s; do
    first=$(ls -d $R/*/domain_classifier.safetensors 2>/dev/null | head -1)
    [ -n "$first" ] && [ ! -f $run/domain_classifier.safetensors ] && cp $first* $run/
    [ -f $run/eval_test/metrics.json ] || $PY sample.py evaluate $run --split test > $run.eval.log 2>&1
    echo "$(date +%T) evaluate $(basename $run) rc=$?"
    [ -d $run/eval_test_checkpoints ] || $PY sample.py evaluate $run --split test --checkpoint all \
      --output $run/eval_test_checkpoints > $run.eval_checkpoints.log 2>&1
    echo "$(date +%T) evaluate $(basename $run) every kept checkpoint rc=$?"
  done
done
echo QUEUE DONE
