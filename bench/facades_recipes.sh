#!/bin/bash
# Issue 25's facades table: pix2pix labels -> photo (unet_128, 128 px, batch 1, 600 steps with the
# paper's linear decay over the second half), 3 seeds each: the paper's recipe, + DiffAugment
# (train.diffaugment=color,translation,cutout), + generator EMA (train.ema_decay=0.999); scored on the
# test split (128 held-out pairs) by L1 / PSNR / SSIM and the FCN-score of an FCN-8s photo -> labels
# segmenter (encoder pre-trained by rotation for 500 steps, as bench/lecture_tables.sh does for 1000). One run after another,
# each on THREADS threads (default 1). Usage: bash bench/facades_recipes.sh [RUNS_DIR]; logs in RUNS_DIR.
cd "$(dirname "$0")/.."
PY=${PY:-python}
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
R=${1:-runs/facades_recipes}
mkdir -p "$R"
# fp32 pinned: the same figures on CPUs with and without native bf16
run() { local name=$1; shift; [ -f $R/$name/export/pipeline.json ] || [ -f $R/$name/export/encoder/config.json ] \
  || $PY train.py "$@" train.mixed_precision=fp32 log.wandb=disabled run.dir=$R/$name > $R/$name.log 2>&1
  echo "$(date +%T) $name rc=$?"; }
S128="data.load_size=143 data.crop_size=128"
run rot_fcn configs/segmentation/facades_rotation.yaml $S128 model.generator=fcn8s model.ngf=32 train.max_steps=500 \
  train.validate_every=250 train.ckpt_every=250
run fcn8s configs/segmentation/facades_fcn8s.yaml $S128 model.ngf=32 train.max_steps=500 train.validate_every=250 \
  train.ckpt_every=250 model.init_from=$R/rot_fcn
P2P="configs/pix2pix/facades.yaml model.generator=unet_128 $S128 train.max_steps=600 train.lr_decay_start=0.5 \
  train.validate_every=300 train.ckpt_every=300"
for s in 0 1 2; do
  run p2p_paper_s$s $P2P run.seed=$s
  run p2p_diffaugment_s$s $P2P run.seed=$s train.diffaugment=color,translation,cutout
  run p2p_ema_s$s $P2P run.seed=$s train.ema_decay=0.999
done
$PY sample.py compare $(for v in paper diffaugment ema; do echo $R/p2p_${v}_s{0,1,2}; done) --data $R/p2p_paper_s0 \
  --split test --segmenter $R/fcn8s --grid-rows 4 --wandb disabled --output reports/facades_recipes --overwrite \
  > $R/compare.log 2>&1
echo "$(date +%T) compare rc=$?"
echo QUEUE DONE
