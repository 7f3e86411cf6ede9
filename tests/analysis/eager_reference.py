"""The analysis-job tests' reference: a tiny model with non-uniform attention, metrics from eager maps."""
import copy
from pathlib import Path

import numpy as np
import torch

from satkern.corpus import load_audio
from satkern.metrics import head_metrics_from_map

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "corpus"
# layer-normed conv features (no GroupNorm over time): results do not depend on padding, so batched
# runs can be held to float rounding; group-normed models (hubert-base, wav2vec2-base) mix padding into
# their features (see the report of issue 6)
MODEL = "tiny-wav2vec2-large"


def tiny_model(seed: int = 0, name: str = None):
    """A tiny built-in model with its query projections redrawn larger: random init gives nearly
    uniform attention (every head alike); sharper maps make the checks below discriminating."""
    from satkern.models import load_model

    torch.manual_seed(seed)
    sm = load_model(name or MODEL)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in sm.model.named_parameters():
            if name.endswith("q_proj.weight") or name.endswith("query.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 1.5)
    return sm


def read_phn(path):
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            a, b, lab = line.split()
            out.append((int(a), int(b), lab))
    return out


def naive_label_weights(segments, num_samples, S, T, index):
    """Frame rows by counting labels sample by sample (independent of satkern.corpus.framing)."""
    per_sample = np.full(num_samples, -1)
    for a, b, lab in segments:
        per_sample[a:min(b, num_samples)] = index[lab]
    W = np.zeros((T, len(index)))
    for k in range(T):
        lo, hi = k * S, min((k + 1) * S, num_samples)
        for y in per_sample[lo:hi]:
            if y >= 0:
                W[k, y] += 1.0 / (hi - lo)
    return W


class EagerReference:
    """Per-utterance metrics and PRM terms from the model's own eager attention maps
    (``output_attentions=True``), one utterance at a time (no padding), float64 statistics."""

    def __init__(self, sm, corpus_dir=FIXTURE):
        model = copy.deepcopy(sm.model)
        if sm.family == "hf":
            model.set_attn_implementation("eager")  # s3prl models: their own attend is eager already
        self.rows = {}  # uid -> dict(G,V,D,W [L,H], Pp [L,H,Y,Y], Pu [Y,Y], duration)
        phns = sorted(Path(corpus_dir).rglob("*.PHN"))
        self.labels = sorted({lab for p in phns for _, _, lab in read_phn(p)})
        index = {l: i for i, l in enumerate(self.labels)}
        for phn in phns:
            uid = phn.relative_to(corpus_dir).with_suffix("").as_posix()
            wav = load_audio(phn.with_suffix(".WAV"), sm.sample_rate)
            inputs, frames = sm.prepare([wav])
            with torch.inference_mode():
                att = model(**inputs, output_attentions=True).attentions
            A = torch.stack([a[0] for a in att]).to(torch.float64)  # [L, H, T, T]
            T = A.shape[-1]
            assert T == int(frames[0]) == sm.num_frames(len(wav))
            m = head_metrics_from_map(A)  # batch axis = layers here
            W = torch.from_numpy(naive_label_weights(read_phn(phn), len(wav), sm.frame_stride, T, index))
            Pp = torch.einsum("tm,lhtk,kn->lhmn", W, A, W) / T  # (1/T) W^T A W
            col = W.sum(0)
            Pu = torch.outer(col, col) / T ** 2  # (1/T^2) (W^T 1)(1^T W)
            self.rows[uid] = dict(G=m.G.numpy(), V=m.V.numpy(), D=m.D.numpy(), W=m.W.numpy(), Pp=Pp.numpy(),
                                  Pu=Pu.numpy(), duration=len(wav) / sm.sample_rate)

    def corpus(self, uids=None):
        uids = sorted(self.rows) if uids is None else list(uids)
        r = [self.rows[u] for u in uids]
        out = {k: np.mean([x[k] for x in r], axis=0) for k in ("G", "V", "D", "W", "Pp", "Pu")}
        Pu = out["Pu"]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["P"] = np.where(Pu > 0, (out["Pp"] - Pu) / Pu, np.nan)
        with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            out["C"] = np.nanmean(out["P"], axis=-2)
        return out
