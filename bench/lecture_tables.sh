#!/bin/bash
# The lecture tables of the README ("reproduced on real data"), one run after another (a 2-core
# machine runs them in about 80 minutes). Usage: bash bench/lecture_tables.sh [RUNS_DIR] (logs in
# RUNS_DIR/<run>.log); PY=... picks the interpreter (default: python on PATH, e.g. the activated venv).
cd "$(dirname "$0")/.."
PY=${PY:-python}
export WANDB_MODE=offline
R=${1:-runs/tables}
mkdir -p "$R"
# The README's tables were measured in fp32: pinned, so the default (auto: bf16 on CPUs with AVX-512 BF16)
# does not change them from one machine to another.
run() { local name=$1; shift; [ -f $R/$name/export/pipeline.json ] || [ -f $R/$name/export/encoder/config.json ] \
  || $PY train.py "$@" train.mixed_precision=fp32 run.dir=$R/$name > $R/$name.log 2>&1; echo "$(date +%T) $name rc=$?"; }
S128="data.load_size=143 data.crop_size=128"
# (a) FCN table on facades photo -> labels, 128 px, encoder pre-trained by rotation on the training photos
FCN="configs/segmentation/facades_fcn8s.yaml $S128 model.ngf=32 train.max_steps=500 train.validate_every=250 train.ckpt_every=250"
run rot_fcn configs/segmentation/facades_rotation.yaml $S128 model.generator=fcn8s model.ngf=32 train.max_steps=1000 \
  train.validate_every=500 train.ckpt_every=500
for s in 0 1 2; do
  run fcn32s_fixed_s$s $FCN run.seed=$s model.generator=fcn32s model.init_from=$R/rot_fcn model.freeze=encoder
  run fcn32s_s$s $FCN run.seed=$s model.generator=fcn32s model.init_from=$R/rot_fcn
  run fcn16s_s$s $FCN run.seed=$s model.generator=fcn16s model.init_from=$R/rot_fcn
  run fcn8s_s$s $FCN run.seed=$s model.generator=fcn8s model.init_from=$R/rot_fcn
  run fcn8s_scratch_s$s $FCN run.seed=$s model.generator=fcn8s
done
$PY sample.py compare $(for v in fcn32s_fixed fcn32s fcn16s fcn8s fcn8s_scratch; do echo $R/${v}_s{0,1,2}; done) --data $R/fcn8s_s0 \
  --split test --grid-rows 3 --wandb disabled --output reports/tables_fcn --overwrite > $R/compare_fcn.log 2>&1
echo "$(date +%T) compare fcn rc=$?"
# (b) colorization at equal steps: full method vs no rebalancing vs L2 regression (CIFAR-10 subset)
COL="configs/colorization/cifar10.yaml train.max_steps=1000 train.validate_every=500 train.ckpt_every=500"
run col_full $COL
run col_norebal $COL colorization.rebalance=false
run col_l2 $COL colorization.loss=l2
$PY sample.py compare $R/col_full $R/col_norebal $R/col_l2 --data $R/col_full --split test --max-images 2000 \
  --wandb disabled --output reports/tables_colour --overwrite > $R/compare_colour.log 2>&1
echo "$(date +%T) compare colour rc=$?"
# (c) decoders: pix2pix labels -> photo, unet_128, 128 px, batch 1, constant LR, equal steps, 3 seeds
P2P="configs/pix2pix/facades.yaml model.generator=unet_128 $S128 train.lr_decay_start=1.0 train.max_steps=600 \
  train.validate_every=300 train.ckpt_every=300"
for s in 0 1 2; do
  run p2p_transposed_s$s $P2P run.seed=$s
  run p2p_bilinear_s$s $P2P run.seed=$s model.upsample=bilinear
  run p2p_unpool_s$s $P2P run.seed=$s model.upsample=unpool
  run p2p_l1only_s$s $P2P run.seed=$s pix2pix.gan_mode=none
done
$PY sample.py compare $(for v in transposed bilinear unpool l1only; do echo $R/p2p_${v}_s{0,1,2}; done) --data $R/p2p_transposed_s0 \
  --split test --segmenter $R/fcn8s_s0 --grid-rows 4 --wandb disabled --output reports/tables_decoders --overwrite \
  > $R/compare_decoders.log 2>&1
echo "$(date +%T) compare decoders rc=$?"
echo QUEUE DONE
