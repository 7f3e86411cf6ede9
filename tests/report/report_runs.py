"""Small synthetic run folders in the exact formats satkern analyze / segment / rank write
(random values from a seeded generator; nothing here is a model's output)."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from satkern.metrics import categorize

L, H = 2, 3
PHONES = ["sil", "aa", "b", "k", "iy"]
MODEL = {"spec": "tiny-test", "name": "tiny-test", "family": "s3prl", "random_weights": True, "sample_rate": 16000,
         "frame_stride": 160, "layers": L, "heads": H, "weights_checksum": "0123456789abcdef"}


def _write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2))


N_UTT = 4
NEAR_UNIFORM_HEAD = (0, 0)  # its rows are 0.001 nats (KL) from uniform on every utterance


def utterances_frame(rng, frames=None):
    """utterances.parquet in satkern analyze's layout: N_UTT utterances of T frames, every head's G, V, D, W
    drawn as length-free values (between uniform and peaked) mapped back through the uniform baselines."""
    from satkern.metrics import uniform_head_metrics

    T = np.asarray(frames if frames is not None else rng.integers(30, 90, N_UTT), dtype=float)
    base = {"G": rng.uniform(0.3, 0.95, (L, H)), "V": rng.uniform(0.0, 0.4, (L, H)),
            "D": rng.uniform(0.0, 0.9, (L, H)), "W": rng.uniform(0.05, 0.9, (L, H))}
    rows = []
    for j, n in enumerate(T):
        u = uniform_head_metrics(n)
        for l in range(L):
            for h in range(H):
                g, v, d, w = (float(np.clip(base[m][l, h] + rng.normal(0, 0.03), 0, 1)) for m in "GVDW")
                if (l, h) == NEAR_UNIFORM_HEAD:
                    G = u["G"] - 0.001
                    g, v, d, w = G / u["G"], 0.0005, 0.001, 0.01
                rows.append({"utterance": f"spk{j}/u{j}", "duration": n * MODEL["frame_stride"] / MODEL["sample_rate"],
                             "frames": int(n), "layer": l, "head": h, "G": g * u["G"],
                             "V": (v - 1.0) * u["G"], "D": (1.0 - d) * u["D"], "W": u["W"] + w * (1 - u["W"])})
    return pd.DataFrame(rows)


def heads_frame(rng, per=None):
    """heads.csv: the corpus means of ``per`` (utterances_frame) and the categories."""
    per = utterances_frame(rng) if per is None else per
    means = per.groupby(["layer", "head"])[["G", "V", "D", "W"]].mean().sort_index()
    G, V, D, W = (means[m].to_numpy().reshape(L, H).copy() for m in "GVDW")
    cats = categorize(torch.from_numpy(G), torch.from_numpy(V), torch.from_numpy(D))
    return pd.DataFrame({"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L), "G": G.ravel(),
                         "V": V.ravel(), "D": D.ravel(), "W": W.ravel(), "category": cats,
                         "n_utterances": np.full(L * H, per["utterance"].nunique())})


def _map(rng, T, kind):
    if kind == "diagonal":
        i = np.arange(T)
        s = -np.abs(i[:, None] - i[None, :]) / 1.5
    elif kind == "vertical":
        s = np.tile(rng.normal(0, 3, T), (T, 1))
    else:
        s = rng.normal(0, 0.1, (T, T))
    a = np.exp(s - s.max(-1, keepdims=True))
    return a / a.sum(-1, keepdims=True)


def write_maps(path, rng, heads, model=MODEL):
    """maps.npz in satkern.analysis.maps' layout (version 1): 2 utterances, the top head per metric."""
    frame_rate = model["sample_rate"] / model["frame_stride"]
    utts = ["spk1/u1", "spk2/u2"]
    T = [40, 30]
    arrays = {}
    for j, n in enumerate(T):
        dur = n / frame_rate
        arrays[f"logmel_{j}"] = rng.normal(-5, 2, (n, 80)).astype(np.float16)
        edges = np.linspace(0, dur, 6)
        arrays[f"phone_start_{j}"] = edges[:-1]
        arrays[f"phone_end_{j}"] = edges[1:]
        arrays[f"phone_label_{j}"] = np.array(PHONES, dtype=str)
    rows = []
    for role, metric in (("global", "G"), ("vertical", "V"), ("diagonal", "D")):
        i = int(np.argmax(heads[metric].to_numpy()))
        l, h = int(heads["layer"][i]), int(heads["head"][i])
        for pick, j in (("average", 0), ("extreme", 1)):
            key = f"map_L{l}_H{h}_U{j}"
            arrays.setdefault(key, _map(rng, T[j], role).astype(np.float16))
            rows.append((role, metric, pick, l, h, j, float(heads[metric][i]) + 0.01 * j, float(heads[metric][i]), key))
    np.savez_compressed(
        path, version=np.array(1), model_name=np.array(model["name"]), model_spec=np.array(model["spec"]),
        weights_checksum=np.array(model["weights_checksum"]), sample_rate=np.array(model["sample_rate"]),
        frame_stride=np.array(model["frame_stride"]), frame_rate_hz=np.array(frame_rate), logmel_hop_s=np.array(0.01),
        n_mels=np.array(80), utt_ids=np.array(utts), utt_duration_s=np.array([n / frame_rate for n in T]),
        map_role=np.array([r[0] for r in rows]), map_metric=np.array([r[1] for r in rows]),
        map_pick=np.array([r[2] for r in rows]), map_layer=np.array([r[3] for r in rows]),
        map_head=np.array([r[4] for r in rows]), map_utt=np.array([r[5] for r in rows]),
        map_value=np.array([r[6] for r in rows]), map_corpus_value=np.array([r[7] for r in rows]),
        map_key=np.array([r[8] for r in rows]), **arrays)


def make_analyze(folder, seed=0, maps=True, prm=True, model=MODEL, head_maps=True, per_utterance=True):
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    per = utterances_frame(rng)
    heads = heads_frame(rng, per)
    heads.to_csv(folder / "heads.csv", index=False, float_format="%.17g")
    if per_utterance:
        per.to_parquet(folder / "utterances.parquet", index=False)
    Y = len(PHONES)
    if prm:
        P = rng.normal(0, 0.5, (L, H, Y, Y))
        P[0, 0, 1, 2] = np.nan
        C = np.nanmean(P, axis=-2)
        np.savez(folder / "prm.npz", P=P, concentration=C, P_counts=np.abs(P), P_base=np.ones((Y, Y)) / Y ** 2,
                 labels=np.array(PHONES))
    if maps:
        write_maps(folder / "maps.npz", rng, heads, model)
    if head_maps:  # every head's map of two utterances (satkern.analysis.head_maps' format), the second pooled
        from explorer_checks import synthetic_head_maps

        hm = synthetic_head_maps(model, L, H, seed=seed, categories=list(heads["category"]))
        (folder / "head_maps.npz").write_bytes(hm.to_npz_bytes())
    _write_json(folder / "summary.json", {
        "model": dict(model), "corpus": {"path": "/data/corpus", "layout": "timit", "labels": PHONES},
        "counts": {"utterances_analyzed": N_UTT, "utterances_skipped": 0,
                   "frames": int(per.drop_duplicates("utterance")["frames"].sum())}, "audio_hours": 0.0005,
        "device": "cpu (test)", "backend": {"requested": "auto", "used": ["cpu"]},
        "versions": {"python": "3", "torch": torch.__version__}, "git_commit": "deadbeef",
        "outputs": ["head_maps.npz", "heads.csv", "maps.npz", "prm.npz", "summary.json"]})
    return folder


def make_segment(folder, seed=1, model=MODEL):
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for split in ("tune", "test"):
        for feat, head in (("attention", "1:2"), ("mfcc", ""), ("hidden:1", "")):
            p, r = rng.uniform(0.5, 0.9, 2)
            rows.append({"split": split, "features": feat, "head": head, "alpha": 1.0, "beta": 1.1, "hits": 40,
                         "n_pred": 60, "n_true": 55, "precision": p, "recall": r, "f1": 2 * p * r / (p + r),
                         "os": 60 / 55 - 1, "r_value": rng.uniform(0.5, 0.8)})
    pd.DataFrame(rows).to_csv(folder / "scores.csv", index=False)
    pr = []
    for feat, head in (("attention", "1:2"), ("mfcc", "")):
        for beta in np.linspace(0.8, 1.4, 7):
            p, r = rng.uniform(0.3, 0.9, 2)
            pr.append({"features": feat, "head": head, "alpha": 1.0, "beta": beta, "precision": p, "recall": r,
                       "f1": 2 * p * r / (p + r), "r_value": rng.uniform(0.4, 0.8)})
    pd.DataFrame(pr).to_csv(folder / "pr_curve.csv", index=False)
    T = 50
    i = np.arange(T)
    blocks = i // 10
    m = np.where(blocks[:, None] == blocks[None, :], 1.0, 0.01)
    m = (m / m.sum(-1, keepdims=True)).astype(np.float32)
    np.savez(folder / "example.npz", utt_id=np.array("spk1/u1"), head=np.array("1:2"), hop=np.array(0.01), map=m,
             kf=(m > 0.05).astype(np.uint8), score=rng.uniform(0, 10, T), true_s=np.array([0.1, 0.2, 0.3, 0.4]),
             pred_s=np.array([0.105, 0.21, 0.33]), logmel=rng.normal(size=(T, 80)).astype(np.float32))
    _write_json(folder / "summary.json", {"version": 1, "kind": "segment", "model": dict(model), "tolerance": 0.02})
    return folder


def make_rank(folder, seed=2, model=MODEL):
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in ("phone", "speaker-utterance"):
        for order, seeds in (("G", [0]), ("V", [0]), ("D", [0]), ("W", [0]), ("random", [0, 1])):
            for seed_ in seeds:
                for step in range(4):
                    rows.append({"order": order, "seed": seed_, "step": step, "n_pruned": 2 * step,
                                 "pruned_heads": ";".join(f"0:{k}" for k in range(2 * step)), "span": np.nan,
                                 "span_mode": "", "task": task, "value": rng.uniform(0.2, 0.9),
                                 "forward_s_per_audio_s": rng.uniform(0.01, 0.02), "attention_share": 0.3})
        for r in (1, 2, 4, 8):
            rows.append({"order": "span", "seed": 0, "step": 0, "n_pruned": 0, "pruned_heads": "", "span": r,
                         "span_mode": "zero", "task": task, "value": rng.uniform(0.2, 0.9),
                         "forward_s_per_audio_s": 0.015, "attention_share": 0.3})
    pd.DataFrame(rows).to_csv(folder / "curves.csv", index=False)
    _write_json(folder / "summary.json", {"version": 1, "kind": "rank", "model": dict(model), "seeds": [0, 1],
                                          "notes": ["task reconstruction skipped: the model has no pre-training head"]})
    return folder


def make_all(root, **kw):
    root = Path(root)
    return make_analyze(root / "analyze", **kw), make_segment(root / "segment"), make_rank(root / "rank")
