"""``satkern pretrain``: Mockingjay pre-training (:func:`satkern.pretrain.pretrain`)."""
from __future__ import annotations

import argparse
import sys

NAME = "pretrain"
HELP = "Mockingjay pre-training of an s3prl-format transformer on an aligned corpus"
DESCRIPTION = ("Mockingjay pre-training (masked acoustic model, L1 reconstruction of masked log-mel frames) of an "
               "s3prl-format transformer. Writes s3prl-layout checkpoints states-<step>.ckpt, loss.csv and "
               "summary.json to --out; --resume continues a killed run bit for bit.")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    from ..pretrain import PretrainConfig

    d = PretrainConfig(corpus="", out="")
    ap.add_argument("--corpus", required=True, help="aligned corpus (TIMIT layout: its TRAIN/ split is used)")
    ap.add_argument("--out", required=True, help="output folder (must be new or empty unless --resume)")
    ap.add_argument("--split", default=d.split, help=f"subfolder of --corpus to train on, if present (default {d.split})")
    ap.add_argument("--layers", type=int, default=d.layers, help=f"transformer layers (default {d.layers})")
    ap.add_argument("--hidden", type=int, default=d.hidden, help=f"hidden size (default {d.hidden})")
    ap.add_argument("--heads", type=int, default=d.heads, help=f"attention heads per layer (default {d.heads})")
    ap.add_argument("--ffn", type=int, default=d.ffn, help=f"feed-forward size (default {d.ffn})")
    ap.add_argument("--downsample", type=int, default=d.downsample, help=f"frames stacked per model frame (default {d.downsample})")
    ap.add_argument("--n-mels", type=int, default=d.n_mels, help=f"log-mel bins (default {d.n_mels})")
    ap.add_argument("--mask-consecutive", type=int, default=d.mask_consecutive,
                    help=f"C: consecutive (stacked) frames per masked span (default {d.mask_consecutive})")
    ap.add_argument("--mask-proportion", type=float, default=d.mask_proportion,
                    help=f"share of frames masked, s3prl's mask_proportion (default {d.mask_proportion})")
    ap.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    ap.add_argument("--batch-seconds", type=float, default=d.batch_seconds,
                    help=f"padded audio seconds per batch (default {d.batch_seconds})")
    ap.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr})")
    ap.add_argument("--warmup", type=float, default=d.warmup, help=f"warm-up share of the steps (default {d.warmup})")
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW weight decay (default {d.weight_decay})")
    ap.add_argument("--dropout", type=float, default=d.dropout, help=f"dropout (default {d.dropout})")
    ap.add_argument("--attention-dropout", type=float, default=d.attention_dropout,
                    help="dropout on the attention probabilities (default: --dropout)")
    ap.add_argument("--pre-layer-norm", action="store_true", help="pre-LN layers (s3prl's pre_layer_norm)")
    ap.add_argument("--local-init-heads", type=int, default=d.local_init_heads,
                    help="positional initialization of the query/key projections of this many heads per layer "
                         f"(docs/models/recipe-search.md; default {d.local_init_heads}: s3prl's initialization)")
    ap.add_argument("--local-init-gain", type=float, default=d.local_init_gain,
                    help=f"gain of that initialization (default {d.local_init_gain})")
    ap.add_argument("--local-init-shift", type=int, default=d.local_init_shift,
                    help="frames those heads start off the diagonal: even heads look back, odd heads "
                         f"ahead (default {d.local_init_shift}: on the diagonal)")
    ap.add_argument("--local-init-lr", type=float, default=d.local_init_lr,
                    help="peak learning rate of those heads' query/key rows, on --lr's schedule "
                         "(default: --lr)")
    ap.add_argument("--position-dims", type=int, default=d.position_dims,
                    help="the first N dimensions of the input representation carry the position table "
                         f"alone: the input projection's rows there stay zero (default {d.position_dims}: off)")
    ap.add_argument("--position-layers", action="store_true",
                    help="with --position-dims: every layer's residual writes stay out of those dimensions too")
    ap.add_argument("--monitor-every", type=int, default=d.monitor_every,
                    help=f"measure held-out L1 and attention locality every N steps, 0 off (default {d.monitor_every})")
    ap.add_argument("--monitor-utterances", type=int, default=d.monitor_utterances,
                    help=f"held-out utterances measured (default {d.monitor_utterances})")
    ap.add_argument("--monitor-split", default=d.monitor_split,
                    help=f"subfolder of --corpus held out for the monitor (default {d.monitor_split})")
    ap.add_argument("--seed", type=int, default=d.seed, help=f"seed (default {d.seed})")
    ap.add_argument("--save-every", type=int, default=d.save_every, help=f"checkpoint every N steps (default {d.save_every})")
    ap.add_argument("--attention", choices=["sdpa", "eager"], default=d.attention,
                    help="attention during training: torch SDPA or the eager map (default sdpa)")
    ap.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N (default cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..jobs.files import check_out_dir
    from ..pretrain import PretrainConfig, pretrain

    check_out_dir(args.out)  # the one message every command gives for an --out that is a file

    cfg = PretrainConfig(corpus=args.corpus, out=args.out, split=args.split, layers=args.layers, hidden=args.hidden,
                         heads=args.heads, ffn=args.ffn, downsample=args.downsample, n_mels=args.n_mels,
                         mask_consecutive=args.mask_consecutive, mask_proportion=args.mask_proportion,
                         steps=args.steps, batch_seconds=args.batch_seconds, lr=args.lr, warmup=args.warmup,
                         weight_decay=args.weight_decay, dropout=args.dropout, attention_dropout=args.attention_dropout, seed=args.seed,
                         pre_layer_norm=args.pre_layer_norm, local_init_heads=args.local_init_heads,
                         local_init_gain=args.local_init_gain, local_init_shift=args.local_init_shift,
                         local_init_lr=args.local_init_lr, position_dims=args.position_dims,
                         position_layers=args.position_layers, monitor_every=args.monitor_every,
                         monitor_utterances=args.monitor_utterances, monitor_split=args.monitor_split,
                         save_every=args.save_every, attention=args.attention, device=args.device,
                         threads=args.threads, resume=args.resume,
                         progress=not args.no_progress and sys.stderr.isatty())
    s = pretrain(cfg)
    print(f"pretrained {s['steps']} steps ({s['transformer_parameters']:,} transformer parameters) on "
          f"{s['utterances']} utterances; final loss {s['final_loss']:.4f}; "
          f"{s['wall_seconds_this_run']:.0f} s this run on {s['device']}; checkpoint {s['checkpoint']}")
    if isinstance(s.get("monitor"), dict):
        print(f"held-out measurements: {s['monitor']['csv']} (figure {s['monitor']['figure']})")
    elif s.get("monitor"):
        print(f"held-out measurements {s['monitor']}")
    return 0
