#!/usr/bin/env python3
"""The model card's measurements of the sat-mini models on the synthetic corpus' TEST split.

    python scripts/evaluate_sat_mini.py --corpus /work/data/synth --out /work/data/eval \
        [--models sat-mini-m3,sat-mini-m6,sat-mini-m9] [--probe-models sat-mini-m3] [--max-utterances N]

For every model and for the same architecture with random weights (s3prl initialization, seed 0):

1. reconstruction: masked-frame L1 of the model's own SpecHead vs predicting each masked frame as the
   utterance's mean stacked frame (every chosen span zeroed, spans from seed 0, the model's own C;
   the random model with C = 3), pooled over the TEST utterances;
2. attention: per head the mean attention distance (frames; -D*T per utterance) and D
   (satkern.pretrain.evaluate.attention_distances, eager maps); the spread of D over heads
   (max - min, and std); heads with mean distance <= 2 frames;
3. per-head G, V, D and categories from ``satkern analyze`` (library call) on the TEST split, and a
   cross-check of its D against (2);
4. probes (METRICS.md "Importance ranking", satkern.rank.probes with its fixed defaults), trained on
   TRAIN and scored on TEST: frame-level phone accuracy (39 folded classes), frame-level and
   utterance-level speaker accuracy, on the last layer of each model in --probe-models, of the
   random-weight model, and of the log-mel input (the model's stacked input frames, same frame rate);
5. locality on real human speech none of the models saw: per head the mean attention distance on
   the recordings of --real-speech (default: the eight spoken channel names, "Front Left" ...,
   of Debian's alsa-utils in /usr/share/sounds/alsa, 48 kHz, resampled; its Noise.wav is left out).

Writes ``OUT/eval.json`` (version 1) and ``OUT/eval.md`` (tables), atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DISTANCE_LIMIT = 2.0  # frames: "local" heads (issue 9)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    import torch

    from satkern.analysis import AnalyzeConfig, analyze
    from satkern.corpus.phones import fold_39
    from satkern.corpus.readers import discover_corpus
    from satkern.models import load_model
    from satkern.models.s3prl import read_checkpoint
    from satkern.models.s3prl.model import stack_frames
    from satkern.models.trained import trained_path
    from satkern.pretrain import PretrainConfig, atomic_save, build_model, ship_checkpoint, upstream_config
    from satkern.pretrain.monitor import choose_spread
    from satkern.pretrain.evaluate import attention_distances, masked_reconstruction, utterance_features
    from satkern.models.s3prl.spec_head import load_spec_head
    from satkern.rank import (ProbeFeatures, extract_probe_features, frame_phone_labels, load_probe_utterances,
                              phone_probe, speaker_frame_probe, speaker_utterance_probe)

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="sat-mini-m3,sat-mini-m6,sat-mini-m9",
                    help="shipped names or NAME=CHECKPOINT pairs, comma-separated")
    ap.add_argument("--probe-models", default="sat-mini-m3", help="models whose last layer is probed ('' none)")
    ap.add_argument("--max-utterances", type=int,
                    help="N utterances of each split, spread over speakers (quick runs; analyze still uses all of TEST)")
    ap.add_argument("--no-analyze", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--real-speech", default="/usr/share/sounds/alsa",
                    help="folder of real human recordings for the locality check ('' to skip)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    models = {}
    for item in [s for s in args.models.split(",") if s]:
        name, _, path = item.partition("=")
        models[name] = Path(path) if path else trained_path(name)
    first = read_checkpoint(next(iter(models.values())))
    ucfg = first["Upstream_Config"]["transformer"]
    arch = PretrainConfig(corpus="", out="", layers=ucfg["num_hidden_layers"], hidden=ucfg["hidden_size"],
                          heads=ucfg["num_attention_heads"], ffn=ucfg["intermediate_size"],
                          downsample=ucfg["downsample_rate"], n_mels=first["Upstream_Config"]["audio"]["n_mels"])
    torch.manual_seed(0)
    rmodel, rhead = build_model(arch)  # the same architecture, s3prl's random init, seed 0
    random_states = {"Transformer": rmodel.state_dict(), "SpecHead": rhead.state_dict(),
                     "Upstream_Config": upstream_config(arch), "Config": {"random_init_seed": 0}, "Step": 0}
    random_path = out / "random-same-arch.ckpt"
    atomic_save(ship_checkpoint(random_states, dtype=torch.float32), random_path)
    models["random (same arch)"] = random_path

    def split_utts(split):
        c = discover_corpus(Path(args.corpus) / split)
        utts = sorted(c.utterances, key=lambda u: u.uid)
        if not args.max_utterances:
            return utts
        return choose_spread(utts, args.max_utterances)  # spread over speakers

    test_utts, train_utts = split_utts("TEST"), split_utts("TRAIN")
    real_waves = {}
    if args.real_speech:
        from satkern.corpus.audio import load_audio

        for f in sorted(Path(args.real_speech).glob("*.wav")):
            if f.stem.lower() != "noise":
                real_waves[f.name] = load_audio(f, 16000)
    test_probe, skipped = load_probe_utterances(test_utts, 16000, label_map=fold_39)
    assert not skipped, skipped
    probe_names = [s for s in args.probe_models.split(",") if s]
    if probe_names:
        probe_names.append("random (same arch)")  # the probes' random-weight comparison
    train_probe = None
    if probe_names:
        train_probe, skipped = load_probe_utterances(train_utts, 16000, label_map=fold_39)
        assert not skipped, skipped
    labels = sorted({s.label for u in (train_probe or []) + test_probe for s in u.segments})
    label_index = {l: i for i, l in enumerate(labels)}

    results = {"version": 1, "corpus": str(args.corpus), "test_utterances": len(test_probe),
               "train_utterances": len(train_probe or []), "torch": torch.__version__,
               "device": "cpu", "threads": torch.get_num_threads(), "models": {}}
    for name, path in models.items():
        t0 = time.time()
        sm = load_model(str(path))
        model = sm.model
        head = load_spec_head(path, model)
        states = read_checkpoint(path)
        C = int(states["Upstream_Config"]["task"]["mask_consecutive_min"])
        feats = [utterance_features(model, u.waveform) for u in test_probe]
        rec = masked_reconstruction(model, head, feats, C, seed=0)
        dist, D = attention_distances(model, feats)
        r = {"checkpoint": str(path), "step": states.get("Step"), "mask_consecutive": C, "reconstruction": rec,
             "mean_attention_distance": dist.tolist(), "D": D.tolist(),
             "D_spread": float(D.max() - D.min()), "D_std": float(D.std()),
             "heads_within_2_frames": int((dist <= DISTANCE_LIMIT).sum()), "heads": int(dist.numel())}
        if real_waves:
            rdist, rD = attention_distances(model, [utterance_features(model, w) for w in real_waves.values()])
            r["real_speech"] = {"files": list(real_waves), "mean_attention_distance": rdist.tolist(),
                                "heads_within_2_frames": int((rdist <= DISTANCE_LIMIT).sum()),
                                "D_spread": float(rD.max() - rD.min())}
        if not args.no_analyze:
            adir = out / f"analyze-{name.replace(' ', '_').replace('(', '').replace(')', '')}"
            summary = analyze(AnalyzeConfig(model=str(path), corpus=str(Path(args.corpus) / "TEST"), out=str(adir),
                                            overwrite=True, progress=False, fold_39=True, budget_seconds=20.0))
            import pandas as pd

            heads = pd.read_csv(adir / "heads.csv")
            r["analyze_dir"] = str(adir)
            r["categories"] = summary.get("categories")
            r["heads_table"] = heads.to_dict(orient="records")
            dcol = torch.tensor(heads["D"].to_numpy())
            r["analyze_D_vs_eager_max_abs_diff"] = float((dcol - D.flatten()).abs().max())
        if name in probe_names:
            ftr = extract_probe_features(sm, train_probe, label_index=label_index)
            fte = extract_probe_features(sm, test_probe, label_index=label_index)
            r["probes"] = {"phone": phone_probe(ftr, fte), "speaker_frame": speaker_frame_probe(ftr, fte),
                           "speaker_utterance": speaker_utterance_probe(ftr, fte)}
        r["seconds"] = time.time() - t0
        results["models"][name] = r
        print(f"{name}: L1 ratio {rec['ratio']:.3f}, D spread {r['D_spread']:.4f}, "
              f"heads<=2 {r['heads_within_2_frames']}, probes {r.get('probes')} ({r['seconds']:.0f} s)", flush=True)

    if probe_names:
        # the log-mel input: the model's own stacked input frames, at the model frame rate
        sm = load_model(str(random_path))
        R = sm.model.config.downsample_rate

        def logmel_features(utts):
            frames, phones = [], []
            for u in utts:
                f = stack_frames(utterance_features(sm.model, u.waveform)[None], R)[0]
                frames.append(f)
                phones.append(frame_phone_labels(u.segments, u.num_samples, sm.frame_stride, f.shape[0], label_index))
            return ProbeFeatures(uids=[u.uid for u in utts], frames=frames, phones=phones, labels=labels,
                                 speakers=[u.speaker for u in utts])

        ftr, fte = logmel_features(train_probe), logmel_features(test_probe)
        results["logmel_input_probes"] = {"phone": phone_probe(ftr, fte), "speaker_frame": speaker_frame_probe(ftr, fte),
                                          "speaker_utterance": speaker_utterance_probe(ftr, fte)}
        print(f"log-mel input probes: {results['logmel_input_probes']}", flush=True)
    results["wall_seconds"] = time.time() - t_start
    _write(out / "eval.json", json.dumps(results, indent=1) + "\n")
    _write(out / "eval.md", tables(results))
    print(tables(results))
    return 0


def tables(res) -> str:
    lines = ["| model | step | C | masked L1 | mean-frame L1 | ratio | interpolation ratio (same masks) | "
             "nearest-frame ratio | D spread (max-min) | D std | heads <= 2 frames (TEST) | heads <= 2 frames (real speech) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["models"].items():
        rec = r["reconstruction"]
        real = r.get("real_speech")
        lines.append(f"| {name} | {r['step']} | {r['mask_consecutive']} | {rec['model_l1']:.4f} | "
                     f"{rec['mean_frame_l1']:.4f} | {rec['ratio']:.3f} | {rec.get('interpolation_ratio', float('nan')):.3f} | "
                     f"{rec.get('nearest_ratio', float('nan')):.3f} | {r['D_spread']:.4f} | {r['D_std']:.4f} | "
                     f"{r['heads_within_2_frames']} / {r['heads']} | "
                     f"{(str(real['heads_within_2_frames']) + ' / ' + str(r['heads'])) if real else 'n/a'} |")
    lines += ["", "| features probed | phone acc. (frame, 39) | speaker acc. (frame) | speaker acc. (utterance) |",
              "|---|---|---|---|"]
    for name, r in res["models"].items():
        if "probes" in r:
            p = r["probes"]
            lines.append(f"| {name}, last layer | {p['phone']:.4f} | {p['speaker_frame']:.4f} | {p['speaker_utterance']:.4f} |")
    if "logmel_input_probes" in res:
        p = res["logmel_input_probes"]
        lines.append(f"| log-mel input (stacked) | {p['phone']:.4f} | {p['speaker_frame']:.4f} | {p['speaker_utterance']:.4f} |")
    cats = [(n, r.get("categories")) for n, r in res["models"].items() if r.get("categories")]
    if cats:
        lines += ["", "| model | categories (satkern analyze, TEST) |", "|---|---|"]
        lines += [f"| {n} | {', '.join(f'{k} {v}' for k, v in c.items())} |" for n, c in cats]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
