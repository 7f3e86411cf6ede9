#!/usr/bin/env python3
"""The short measured runs of docs/models/recipe-search.md (issue 18's diagnosis).

Trains a small s3prl-format model (default 2 layers x 4 heads x 32) with satkern.pretrain's pieces for
a fixed wall time, and prints every --eval_every steps one JSON line: held-out masked-L1 ratio to the
mean frame (20 TEST utterances, C-frame masks all zeroed), the smallest and median per-head mean
attention distance (12 TEST utterances, eager maps), the heads within 2 frames and the D spread.

Diagnostic switches (none of them is part of a shipped recipe except --posinit, which
satkern pretrain offers as --local-init-heads / --local-init-gain):
  --oracle A [--anneal N]  add -A*abs(i-j) to every head's logits (annealed to 0 over N steps)
  --qk_std S / --init S    other initializations of q/k / of every Linear
  --qk_mult M              learning rate of the q/k projections times M
  --posinit G --posheads N positional init of N heads per layer (gain G)
  --synthetic RHO          smooth AR(1) random features instead of speech

    python scripts/recipe_probe.py --wall 90 --threads 1 [options]   (needs /work/data/synth)
"""
import argparse, json, os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch, numpy as np
from satkern.pretrain.train import PretrainConfig, build_model, _sdpa_attend, masked_l1, reconstruct, lr_at
from satkern.pretrain.data import training_utterances, extract_all, epoch_batches, collate
from satkern.pretrain.evaluate import masked_reconstruction, attention_distances

STATE = {'step': 0}
CACHE = os.environ.get("RECIPE_PROBE_CACHE", "/tmp/recipe-probe-feats.pt")
def feats():
    if os.path.exists(CACHE):
        return torch.load(CACHE)
    cfg = PretrainConfig(corpus="/work/data/synth", out="/tmp/x")
    m, _ = build_model(cfg)
    tr, _ = training_utterances("/work/data/synth", "TRAIN")
    te, _ = training_utterances("/work/data/synth", "TEST")
    ftr, _ = extract_all(m.features, tr, 3)
    te = te[::8]  # 30 utterances over speakers
    fte, _ = extract_all(m.features, te, 3)
    d = {"train": ftr, "test": fte}
    torch.save(d, CACHE)
    return d

def run(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    D = feats()
    if args.synthetic:
        g = torch.Generator().manual_seed(7)
        def smooth(n):
            z = torch.randn(n, 240, generator=g); out = torch.empty_like(z); out[0] = z[0]
            for t in range(1, n): out[t] = args.synthetic * out[t-1] + (1 - args.synthetic**2) ** 0.5 * z[t]
            return out.reshape(n * 3, 80)
        D = {"train": [smooth(int(n)) for n in torch.randint(120, 220, (960,), generator=g)],
             "test": [smooth(170) for _ in range(30)]}
    cfg = PretrainConfig(corpus="x", out="x", layers=args.layers, hidden=args.hidden, heads=args.heads, ffn=args.ffn,
                         mask_consecutive=args.C, lr=args.lr, warmup=args.warmup, dropout=args.dropout,
                         pre_layer_norm=args.preln, steps=args.steps, batch_seconds=args.batch_seconds)
    model, head = build_model(cfg)
    if args.init:
        model.config.initializer_range = args.init
        model.apply(model._init_weights); head.apply(model._init_weights)
    if args.posinit:
        dh = cfg.hidden // cfg.heads
        for l in model.encoder.layer:
            for lin in (l.attention.self.query, l.attention.self.key):
                for hh in range(int(args.posheads)):
                    lin.weight.data[hh*dh:(hh+1)*dh, :] = 0.02 * torch.randn(dh, cfg.hidden)
                    lin.weight.data[hh*dh:(hh+1)*dh, :dh] += args.posinit * torch.eye(dh)
    if args.qk_std:
        for l in model.encoder.layer:
            for lin in (l.attention.self.query, l.attention.self.key):
                lin.weight.data.normal_(0, args.qk_std)
    if args.oracle:
        import torch.nn.functional as F
        from satkern.models.s3prl.model import padding_bias
        def mk(module):
            def attend(q, k, v, lengths):
                T = q.shape[-2]
                i = torch.arange(T)
                alpha = args.oracle * (max(0.0, 1.0 - STATE['step'] / args.anneal) if args.anneal else 1.0)
                bias = padding_bias(lengths, T, q.dtype) - alpha * (i[:, None] - i[None, :]).abs().float()
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0)
            return attend
        global _sdpa_attend
        _sdpa_attend = mk
    for mm in model.attention_modules():
        mm.attend = _sdpa_attend(mm)
    params = list(model.parameters()) + list(head.parameters())
    qk = [p for n, p in model.named_parameters() if ".query." in n or ".key." in n]
    qk_ids = {id(p) for p in qk}
    rest = [p for p in params if id(p) not in qk_ids]
    opt = torch.optim.AdamW([{"params": rest, "mult": 1.0}, {"params": qk, "mult": args.qk_mult}], lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, args.beta2))
    fl = [f.shape[0] for f in D["train"]]
    max_frames = int(round(cfg.batch_seconds / 0.01))
    gen = torch.Generator().manual_seed(1)
    step, epoch = 0, 0
    t0 = time.time()
    log = []
    def evaluate():
        model.eval(); head.eval()
        for mm in model.attention_modules(): mm.__dict__.pop("attend", None)
        if args.oracle:
            for mm in model.attention_modules(): mm.attend = _sdpa_attend(mm)
        rec = masked_reconstruction(model, head, D["test"][:20], args.C)
        for mm in model.attention_modules(): mm.__dict__.pop("attend", None)
        dist, Dm = attention_distances(model, D["test"][:12])
        model.train(); head.train()
        for mm in model.attention_modules(): mm.attend = _sdpa_attend(mm)
        d = dist.flatten()
        return {"step": step, "t": round(time.time()-t0,1), "ratio": round(rec["ratio"],4), "min_dist": round(d.min().item(),2),
                "med_dist": round(d.median().item(),2), "n_le2": int((d<=2).sum()), "D_spread": round((Dm.max()-Dm.min()).item(),4)}
    while step < cfg.steps and time.time()-t0 < args.wall:
        for b in epoch_batches(fl, max_frames, 0, epoch):
            x, lengths = collate(D["train"], b)
            lr = lr_at(step, cfg)
            for g in opt.param_groups: g["lr"] = lr * g["mult"]
            pred, target, label = reconstruct(model, head, x, lengths, cfg.mask_consecutive, cfg.mask_proportion, gen)
            loss = masked_l1(pred, target, label)
            opt.zero_grad(); loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip); opt.step()
            step += 1
            STATE['step'] = step
            if step % args.eval_every == 0:
                e = evaluate(); e["loss"] = round(loss.item(),4); print(json.dumps(e), flush=True); log.append(e)
            if step >= cfg.steps or time.time()-t0 >= args.wall: break
        epoch += 1
    e = evaluate(); e["loss"] = round(loss.item(),4); e["final"] = True; print(json.dumps(e), flush=True)
    if args.save:
        torch.save({"model": model.state_dict(), "head": head.state_dict()}, args.save)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    for k, v in dict(layers=2, hidden=128, heads=4, ffn=256, C=3, steps=100000, threads=2, eval_every=100).items():
        ap.add_argument("--"+k, type=int, default=v)
    for k, v in dict(posinit=0.0, posheads=1.0, synthetic=0.0, init=0.0, qk_mult=1.0, anneal=0.0, oracle=0.0, lr=5e-4, warmup=0.0, dropout=0.1, batch_seconds=16.0, wall=180.0, qk_std=0.0, beta2=0.999).items():
        ap.add_argument("--"+k, type=float, default=v)
    ap.add_argument("--preln", action="store_true")
    ap.add_argument("--save")
    run(ap.parse_args())
