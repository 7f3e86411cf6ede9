"""Mockingjay pre-training of an s3prl-format transformer (:func:`pretrain`).

One step: a batch of utterances' log-mel features (the model's own feature code), stacked
``downsample_rate`` frames per model frame; spans of ``mask_consecutive`` stacked frames masked
(:mod:`satkern.pretrain.masking`); the transformer + s3prl's head (:class:`satkern.rank.SpecHead`)
reconstruct the stacked frames; L1 loss over the masked frames (every feature dimension);
AdamW with linear warm-up and linear decay to 0; gradient norm clipped.

Outputs in ``out/``: ``states-<step>.ckpt`` (s3prl layout, see :mod:`satkern.pretrain.checkpoint`;
the newest ``keep_checkpoints`` kept), ``loss.csv`` (one row per step), ``config.json`` (the run's
options), ``summary.json`` (at the end). A killed run continues with ``resume=True`` from its
newest checkpoint, bit for bit: model, head, optimizer, the torch / numpy / python / masking RNG
states and the position in the epoch's batch order are all restored. On SIGINT or SIGTERM the step
being taken finishes, a checkpoint of it is written (whatever ``save_every`` says) and
:class:`satkern.jobs.interrupt.Interrupted` is raised ("interrupted: 2 of 8 steps kept; resume with
--resume"; the CLI prints it and exits 130 / 143); a second signal stops at once.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..corpus.readers import discover_corpus
from ..models.s3prl.builtin import LOG_MEL_AUDIO
from ..models.s3prl.features import S3prlFeatures
from ..models.s3prl.model import S3prlConfig, S3prlTransformer, padding_bias, stack_frames
from ..provenance import device_description, git_commit, versions
from ..jobs.interrupt import stop_between
from .checkpoint import CHECKPOINT_RE, atomic_save, checkpoint_name, latest_checkpoint, prune_checkpoints
from .data import collate, epoch_batches, extract_all, training_utterances
from ..models.s3prl.spec_head import SpecHead
from .masking import mask_frames
from .planted import PlantedRate, hold_position_dims, local_init
from .monitor import HeldOut, MonitorLog, choose_spread, measure, plot_monitor

VERSION = 1
LOSS_COLUMNS = ["step", "epoch", "loss", "lr", "masked_frames", "elapsed_s"]
# options that may differ between a run and its --resume (they do not change the result)
RESUME_FREE = ("resume", "device", "progress", "threads", "stop_after")


@dataclass
class PretrainConfig:
    corpus: str
    out: str
    layers: int = 6
    hidden: int = 256
    heads: int = 8
    ffn: int = 1024
    downsample: int = 3
    n_mels: int = 80
    mask_consecutive: int = 3
    mask_proportion: float = 0.15  # s3prl's mask_proportion: the share of (stacked) frames masked
    steps: int = 1000
    batch_seconds: float = 40.0  # padded audio seconds per batch
    lr: float = 2e-4  # s3prl Mockingjay/TERA pre-training: AdamW 2e-4
    warmup: float = 0.07  # warm-up share of the steps (s3prl's warmup_proportion)
    weight_decay: float = 0.01
    grad_clip: float = 5.0  # s3prl's gradient_clipping
    dropout: float = 0.1
    # dropout on the attention probabilities (s3prl's attention_probs_dropout_prob); None: --dropout
    attention_dropout: Optional[float] = None
    pre_layer_norm: bool = False  # s3prl's pre_layer_norm (LayerNorm before each block instead of after)
    # positional initialization of the query/key projections of this many heads per layer (see
    # local_init); 0 keeps s3prl's N(0, initializer_range) everywhere
    local_init_heads: int = 0
    local_init_gain: float = 1.5
    # frames the planted heads' kernel is moved off the diagonal: heads 0, 2, .. look this many frames
    # back, heads 1, 3, .. as many ahead (0: every planted head peaks on its own frame)
    local_init_shift: int = 0
    # peak learning rate of the planted heads' query/key rows (same schedule as --lr); None: --lr
    # (see PlantedRate)
    local_init_lr: Optional[float] = None
    # the first N dimensions of the input representation carry the sinusoidal table alone: the rows of
    # spec_transform that would add features there are zero and stay zero (see hold_position_dims)
    position_dims: int = 0
    # with position_dims: every layer's two residual writes (attention output and feed-forward output)
    # stay out of those dimensions too, so the table reaches the last layer (see hold_position_dims)
    position_layers: bool = False
    # held-out measurements (satkern.pretrain.monitor): every N steps, on N utterances of this split
    monitor_every: int = 500  # 0: off
    monitor_utterances: int = 24
    monitor_split: str = "TEST"
    seed: int = 0
    split: str = "TRAIN"
    save_every: int = 100
    keep_checkpoints: int = 2
    attention: str = "sdpa"  # "sdpa" (torch scaled_dot_product_attention) or "eager"
    device: str = "cpu"
    threads: int = 0  # torch threads (0: torch's default)
    resume: bool = False
    progress: bool = True
    stop_after: Optional[int] = None  # stop (as if killed) after this step's checkpoint; for tests

    def validate(self) -> None:
        def need(cond, what):
            if not cond:
                raise ValueError(what)

        need(self.layers >= 1, f"--layers must be >= 1; got {self.layers}")
        need(self.heads >= 1 and self.hidden % self.heads == 0,
             f"--hidden {self.hidden} must be a positive multiple of --heads {self.heads}")
        need(self.ffn >= 1, f"--ffn must be >= 1; got {self.ffn}")
        need(self.downsample >= 1, f"--downsample must be >= 1; got {self.downsample}")
        need(self.n_mels >= 1, f"--n-mels must be >= 1; got {self.n_mels}")
        need(self.mask_consecutive >= 1, f"--mask-consecutive must be >= 1; got {self.mask_consecutive}")
        need(0.0 < self.mask_proportion < 1.0, f"--mask-proportion must be in (0, 1); got {self.mask_proportion}")
        need(self.steps >= 1, f"--steps must be >= 1; got {self.steps}")
        need(self.batch_seconds > 0, f"--batch-seconds must be > 0; got {self.batch_seconds}")
        need(self.lr > 0, f"--lr must be > 0; got {self.lr}")
        need(0.0 <= self.warmup < 1.0, f"--warmup must be in [0, 1); got {self.warmup}")
        need(self.save_every >= 1, f"--save-every must be >= 1; got {self.save_every}")
        need(self.attention in ("sdpa", "eager"), f"--attention must be sdpa or eager; got {self.attention!r}")
        need(0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1); got {self.dropout}")
        need(self.attention_dropout is None or 0.0 <= self.attention_dropout < 1.0,
             f"--attention-dropout must be in [0, 1); got {self.attention_dropout}")
        need(0 <= self.local_init_heads <= self.heads,
             f"--local-init-heads must be in [0, --heads {self.heads}]; got {self.local_init_heads}")
        need(self.local_init_heads == 0 or self.hidden // self.heads <= self.hidden // 2,
             "--local-init-heads needs a head size of at most half the hidden size")
        need(self.local_init_gain > 0, f"--local-init-gain must be > 0; got {self.local_init_gain}")
        need(self.local_init_shift >= 0, f"--local-init-shift must be >= 0; got {self.local_init_shift}")
        need(self.local_init_lr is None or self.local_init_lr > 0,
             f"--local-init-lr must be > 0; got {self.local_init_lr}")
        need(self.local_init_lr is None or self.local_init_heads > 0,
             "--local-init-lr needs --local-init-heads > 0")
        need(0 <= self.position_dims < self.hidden,
             f"--position-dims must be in [0, --hidden {self.hidden}); got {self.position_dims}")
        need(not self.position_layers or self.position_dims > 0,
             "--position-layers needs --position-dims > 0")
        need(self.monitor_every >= 0, f"--monitor-every must be >= 0; got {self.monitor_every}")
        need(self.monitor_utterances >= 1, f"--monitor-utterances must be >= 1; got {self.monitor_utterances}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------
# model + configs in s3prl's terms
# ----------------------------------------------------------------------------------
def audio_config(n_mels: int) -> Dict[str, Any]:
    """s3prl's on-the-fly log-mel block (input and target: log-mel with per-utterance CMVN)."""
    audio = json.loads(json.dumps(LOG_MEL_AUDIO))
    audio["n_mels"] = int(n_mels)
    audio["target"] = dict(audio["input"], channel=1)  # s3prl's reconstruction target: the clean channel
    return audio


def upstream_config(cfg: PretrainConfig) -> Dict[str, Any]:
    transformer = {"hidden_size": cfg.hidden, "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
                   "intermediate_size": cfg.ffn, "hidden_act": "gelu", "hidden_dropout_prob": cfg.dropout,
                   "attention_probs_dropout_prob": cfg.dropout if cfg.attention_dropout is None else cfg.attention_dropout, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
                   "share_layer": False, "pre_layer_norm": bool(cfg.pre_layer_norm),
                   "downsample_rate": cfg.downsample}
    task = {"loss": "L1", "sequence_length": 1500, "position_encoding_size": cfg.hidden,
            "mask_proportion": cfg.mask_proportion, "mask_consecutive_min": cfg.mask_consecutive,
            "mask_consecutive_max": cfg.mask_consecutive, "mask_allow_overlap": True, "mask_bucket_ratio": 1.5,
            "mask_frequency": 0.0, "noise_proportion": 0.0}
    return {"transformer": transformer, "task": task, "audio": audio_config(cfg.n_mels)}


def build_model(cfg: PretrainConfig):
    """``(transformer, spec head)`` with s3prl's random initialization under the current torch seed."""
    up = upstream_config(cfg)
    features = S3prlFeatures.from_audio_config(up["audio"])
    config = S3prlConfig.from_block(up["transformer"], input_dim=features.dim)
    model = S3prlTransformer(config, features=features, name="pretrain")
    head = SpecHead.for_model(model)
    head.apply(model._init_weights)  # s3prl initializes the head like the transformer: N(0, 0.02), zero bias
    if cfg.local_init_heads:
        local_init(model, cfg.local_init_heads, cfg.local_init_gain, cfg.local_init_shift)
    if cfg.position_dims:
        hold_position_dims(model, cfg.position_dims, layers=cfg.position_layers)
    return model, head


def _sdpa_attend(module):
    def attend(q, k, v, lengths):
        bias = padding_bias(lengths, q.shape[-2], q.dtype)  # s3prl's additive -10000 on padded keys
        p = module.dropout.p if module.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)

    return attend


def _held_out(cfg: PretrainConfig, features) -> Tuple[Optional[HeldOut], Optional[str]]:
    """The monitor's fixed held-out set -- ``monitor_utterances`` readable utterances of
    ``corpus/monitor_split`` spread over its sorted list (audio only: no alignments needed) -- or
    ``(None, why)`` when there is nothing held out to measure (then the monitor is off rather than
    measuring on training data)."""
    root = Path(cfg.corpus) / cfg.monitor_split
    if cfg.monitor_split == cfg.split:
        return None, f"off: --monitor-split {cfg.monitor_split} is the training split"
    if not root.is_dir():
        return None, f"off: --corpus has no {cfg.monitor_split}/ split to hold out"
    utts = sorted(discover_corpus(root).utterances, key=lambda u: u.uid)
    try:
        feats, _ = extract_all(features, choose_spread(utts, cfg.monitor_utterances), cfg.downsample)
    except ValueError:  # no readable utterance long enough
        return None, f"off: no readable utterance in {root}"
    return HeldOut(feats=feats, consecutive=cfg.mask_consecutive, seed=cfg.seed), None


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up over ``warmup * steps`` steps, then linear decay to 0 at ``steps``."""
    warm = int(cfg.warmup * cfg.steps)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))


def masked_l1(pred: torch.Tensor, target: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the masked frames (``label [B, T']``) and every dimension."""
    sel = label[..., None].expand_as(pred)
    return (pred - target).abs()[sel].mean()


def reconstruct(model, head, feats: torch.Tensor, lengths: torch.Tensor, consecutive: int, proportion: float,
                generator: torch.Generator, alter: bool = True):
    """``(prediction, target, mask_label)`` of one batch: all ``[B, T', F x R]`` stacked frames."""
    R = model.config.downsample_rate
    target = stack_frames(feats, R)
    model_lengths = torch.div(lengths, R, rounding_mode="floor")
    masked, label = mask_frames(target, model_lengths, consecutive, proportion, generator, alter=alter)
    B, Tm, FR = masked.shape
    out = model(masked.reshape(B, Tm * R, FR // R), model_lengths * R)
    return head(out.last_hidden_state)[0], target, label


# ----------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------
def _rng_state(mask_gen: torch.Generator) -> Dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"torch": torch.get_rng_state(), "mask": mask_gen.get_state(),
            "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                      "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "python": [py_state[0], list(py_state[1]), py_state[2]],
            "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []}


def _set_rng_state(state: Dict[str, Any], mask_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    mask_gen.set_state(state["mask"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _prepare_out(cfg: PretrainConfig) -> Optional[Path]:
    """Check the output folder; returns the checkpoint to resume from (or None)."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {cfg.out}: exists and is not a folder")
    if not cfg.resume:
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"--out {cfg.out}: folder exists and is not empty (use --resume to continue "
                                  f"the run in it, or choose a new folder)")
        return None
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise FileNotFoundError(f"--resume: no states-<step>.ckpt checkpoint in --out {cfg.out}")
    saved_cfg = out / "config.json"
    if saved_cfg.is_file():
        saved = json.loads(saved_cfg.read_text())
        mine = cfg.to_dict()
        diff = sorted(k for k in mine if k not in RESUME_FREE and k in saved and saved[k] != mine[k])
        if diff:
            shown = ", ".join(f"{k}: run {saved[k]!r} vs now {mine[k]!r}" for k in diff)
            raise ValueError(f"--resume: options differ from the run in {cfg.out} ({shown}); resume with the "
                             f"same options")
    return ckpt


def _rewrite_loss_csv(path: Path, max_step: int) -> None:
    """Keep the rows up to ``max_step`` (a killed run may have logged steps after its last checkpoint);
    a row torn by a kill while it was written (fields missing) is dropped, not trusted."""
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if None not in r.values() and int(r["step"]) <= max_step]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOSS_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _kept_note(checkpoint: Optional[Path], cfg: PretrainConfig) -> str:
    """What a stop keeps: the newest checkpoint on disk."""
    if checkpoint is None:
        return "nothing kept (no checkpoint written yet)"
    m = CHECKPOINT_RE.match(checkpoint.name)
    return f"{m.group(1) if m else '?'} of {cfg.steps} steps kept in {checkpoint.name}; resume with --resume"


def pretrain(cfg: PretrainConfig) -> Dict[str, Any]:
    """Run (or resume) Mockingjay pre-training; returns the summary (also ``out/summary.json``)."""
    cfg.validate()
    resume_from = _prepare_out(cfg)
    utterances, read_from = training_utterances(cfg.corpus, cfg.split)
    out = Path(cfg.out)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device}: CUDA is not available in this torch build")

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2 ** 32))
    random.seed(cfg.seed)
    mask_gen = torch.Generator().manual_seed(cfg.seed + 1)
    model, head = build_model(cfg)
    feats, uids = extract_all(model.features, utterances, cfg.downsample, progress=cfg.progress)
    frame_lengths = [int(f.shape[0]) for f in feats]
    hop_s = model.features.hop_length / model.features.sample_rate
    max_frames = max(1, int(round(cfg.batch_seconds / hop_s)))
    held, monitor_off = _held_out(cfg, model.features) if cfg.monitor_every else (None, None)
    model.to(device).train()
    head.to(device).train()
    attention_modules = model.attention_modules()
    if cfg.attention == "sdpa":
        for m in attention_modules:
            m.attend = _sdpa_attend(m)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    planted = (PlantedRate(model, cfg.local_init_heads, cfg.local_init_lr / cfg.lr)
               if cfg.local_init_lr is not None and cfg.local_init_lr != cfg.lr else None)
    up_cfg = upstream_config(cfg)
    run_cfg = {"satkern_pretrain": cfg.to_dict(), "version": VERSION, "corpus_read": read_from,
               "utterances": len(feats)}

    step, epoch, pos = 0, 0, 0
    loss_csv = out / "loss.csv"
    monitor = MonitorLog(out / "monitor.csv", cfg.layers, cfg.heads) if held is not None else None
    # SIGINT / SIGTERM from here on: the step being taken finishes, a checkpoint of it is written and
    # Interrupted is raised (satkern.jobs.interrupt; the CLI prints one line and exits 130 / 143); a
    # second signal stops at once, the last checkpoint kept
    with stop_between("step", note=_kept_note(resume_from, cfg)) as stop:
        if resume_from is not None:
            from ..models.s3prl.checkpoint import read_checkpoint

            states = read_checkpoint(resume_from)
            model.load_state_dict(states["Transformer"])
            head.load_state_dict(states["SpecHead"])
            optimizer.load_state_dict(states["Optimizer"])
            r = states["Satkern_Resume"]
            step, epoch, pos = int(states["Step"]), int(r["epoch"]), int(r["batch_in_epoch"])
            _set_rng_state(r["rng"], mask_gen)
            _rewrite_loss_csv(loss_csv, step)
            if monitor is not None:
                monitor.trim(step)
        else:
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / "config.json.tmp"
            tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            os.replace(tmp, out / "config.json")
            _rewrite_loss_csv(loss_csv, -1)
            if monitor is not None:
                monitor.trim(-1)
                monitor.append(0, measure(model, head, held))  # the untrained model: where the curves start

        def save(step_now: int, epoch_now: int, pos_now: int) -> None:
            states = {"Transformer": model.state_dict(), "SpecHead": head.state_dict(), "Upstream_Config": up_cfg,
                      "Config": run_cfg, "Step": step_now, "Optimizer": optimizer.state_dict(),
                      "Satkern_Resume": {"version": VERSION, "epoch": epoch_now, "batch_in_epoch": pos_now,
                                         "rng": _rng_state(mask_gen)}}
            atomic_save(states, out / checkpoint_name(step_now))
            prune_checkpoints(out, cfg.keep_checkpoints)
            saved[0] = step_now
            stop.note = _kept_note(out / checkpoint_name(step_now), cfg)

        saved = [step if resume_from is not None else None]  # the step of the newest checkpoint on disk

        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="pretrain", disable=not cfg.progress, dynamic_ncols=True)
        t0 = time.perf_counter()
        frames_seen = 0
        monitor_seconds = 0.0  # time inside the held-out measurements (not in elapsed_s)
        csv_file = open(loss_csv, "a", newline="")
        writer = csv.writer(csv_file)
        last_loss = float("nan")
        try:
            while step < cfg.steps:
                batches = epoch_batches(frame_lengths, max_frames, cfg.seed, epoch)
                while pos < len(batches) and step < cfg.steps:
                    if stop:  # a signal came: checkpoint the steps taken, then stop
                        if saved[0] != step:
                            save(step, epoch, pos)
                        raise stop.interrupted(f"interrupted: {step} of {cfg.steps} steps kept; "
                                               f"resume with --resume")
                    x, lengths = collate(feats, batches[pos])
                    x, lengths = x.to(device), lengths.to(device)
                    lr = lr_at(step, cfg)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    pred, target, label = reconstruct(model, head, x, lengths, cfg.mask_consecutive,
                                                      cfg.mask_proportion, mask_gen, alter=True)
                    loss = masked_l1(pred, target, label)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    if planted is None:
                        optimizer.step()
                    else:
                        with planted:
                            optimizer.step()
                    step += 1
                    pos += 1
                    last_loss = float(loss.detach())
                    frames_seen += int(lengths.sum())
                    elapsed = time.perf_counter() - t0
                    writer.writerow([step, epoch, f"{last_loss:.6f}", f"{lr:.3e}", int(label.sum()), f"{elapsed:.1f}"])
                    csv_file.flush()
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}",
                                    audio_s_per_s=f"{frames_seen * hop_s / max(elapsed, 1e-9):.1f}")
                    if monitor is not None and (step % cfg.monitor_every == 0 or step == cfg.steps):
                        m0 = time.perf_counter()
                        row = measure(model, head, held)
                        monitor.append(step, row)
                        spent = time.perf_counter() - m0
                        monitor_seconds += spent
                        t0 += spent  # elapsed_s and the throughput count training only
                        bar.write(f"step {step}: held-out L1 ratio {row['ratio']:.3f}, {row['local_heads']} local "
                                  f"heads, most local {row['min_distance']:.1f} frames, median "
                                  f"{row['median_distance']:.1f}")
                    if step % cfg.save_every == 0 or step == cfg.steps:
                        next_epoch, next_pos = (epoch + 1, 0) if pos >= len(batches) else (epoch, pos)
                        save(step, next_epoch, next_pos)
                        if cfg.stop_after is not None and step >= cfg.stop_after:
                            return {"stopped_at": step}
                if pos >= len(batches):
                    epoch, pos = epoch + 1, 0
        finally:
            csv_file.close()
            bar.close()
            for m in attention_modules:
                m.__dict__.pop("attend", None)
    wall = time.perf_counter() - t0 + monitor_seconds
    monitor_note = None
    if monitor is not None:
        plot_monitor(monitor.path, out / "monitor.png", loss_csv=str(loss_csv),
                     title=f"satkern pretrain: {cfg.layers} layers x {cfg.heads} heads, C = {cfg.mask_consecutive}")
        monitor_note = {"csv": str(monitor.path), "figure": str(out / "monitor.png"), "every": cfg.monitor_every,
                        "utterances": len(held.feats), "split": cfg.monitor_split,
                        "seconds_this_run": monitor_seconds}
    elif cfg.monitor_every:
        monitor_note = monitor_off
    n_params = sum(p.numel() for p in model.parameters())
    summary = {"version": VERSION, "steps": step, "final_loss": last_loss, "wall_seconds_this_run": wall,
               "transformer_parameters": n_params, "spec_head_parameters": sum(p.numel() for p in head.parameters()),
               "utterances": len(feats), "corpus_read": read_from, "device": device_description(device),
               "versions": versions(), "commit": git_commit(), "threads": torch.get_num_threads(),
               "checkpoint": str(out / checkpoint_name(step)), "monitor": monitor_note, "config": cfg.to_dict()}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "summary.json")
    return summary
