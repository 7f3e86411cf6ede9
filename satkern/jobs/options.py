"""The command-line options every corpus job shares (:class:`~satkern.jobs.CorpusJobConfig`'s fields), declared
once for ``analyze``, ``segment``, ``rank`` (and ``demo``, which names model, corpus and out itself)."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict

MODEL_HELP = "transformers model folder, s3prl checkpoint file, or built-in name (random weights)"
CORPUS_HELP = "folder of audio (recursive), LibriSpeech/TIMIT tree, or CSV/TSV manifest"


def add_job_options(ap: argparse.ArgumentParser, *, io: bool = True, device_help: str = "cpu, cuda, cuda:N (default cpu)",
                    seed_help: str = "seed for random-weight built-in models (default 0)",
                    overwrite_help: str = "start over in an --out that holds a previous run") -> None:
    """``--model --corpus --out`` (unless ``io`` is False), then ``--device --backend --layout
    --alignments --phone-tier --overwrite --seed --trust-checkpoint --no-progress``."""
    if io:
        ap.add_argument("--model", required=True, help=MODEL_HELP)
        ap.add_argument("--corpus", required=True, help=CORPUS_HELP)
        ap.add_argument("--out", required=True, help="output folder")
    jobs = ap.add_argument_group("corpus-job options (shared by analyze, segment, rank)")
    jobs.add_argument("--device", default="cpu", help=device_help)
    jobs.add_argument("--backend", default="auto", help="satkern attention backend: auto, reference, cpu, triton, cuda")
    jobs.add_argument("--layout", choices=["manifest", "timit", "librispeech", "directory"],
                      help="corpus layout (default: detected)")
    jobs.add_argument("--alignments", help="folder of TextGrids (e.g. MFA output) matched to audio by file stem")
    jobs.add_argument("--phone-tier", help="TextGrid tier holding phones (default: 'phones' or the only interval tier)")
    jobs.add_argument("--overwrite", action="store_true", help=overwrite_help)
    jobs.add_argument("--seed", type=int, default=0, help=seed_help)
    jobs.add_argument("--trust-checkpoint", action="store_true", help="allow pickled s3prl checkpoints (runs their code)")
    jobs.add_argument("--no-progress", action="store_true", help="no progress bar")


def job_options(args, *, io: bool = True) -> Dict[str, Any]:
    """The :class:`~satkern.jobs.CorpusJobConfig` keyword arguments of what :func:`add_job_options` declared."""
    kw = dict(device=args.device, backend=args.backend, layout=args.layout, alignments=args.alignments,
              phone_tier=args.phone_tier, overwrite=args.overwrite, seed=args.seed,
              trust_checkpoint=args.trust_checkpoint, progress=not args.no_progress and sys.stderr.isatty())
    if io:
        kw.update(model=args.model, corpus=args.corpus, out=args.out)
    return kw
