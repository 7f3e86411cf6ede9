"""TIMIT phone sets and the standard 61 -> 39 folding (Lee & Hon 1989), as used by the paper.

* :data:`TIMIT61` -- the 61 symbols of TIMIT ``.PHN`` files (incl. closures, ``h#``, ``pau``, ``epi``, ``q``).
* :data:`TIMIT39` -- the 39 classes after folding (incl. ``sil``).
* :func:`fold_39` -- one label to its class, or ``None`` for a label that is dropped (``q``).

Folding (Lee & Hon 1989, table 2, as in the Kaldi/ESPnet TIMIT recipes):
closures ``bcl dcl gcl pcl tcl kcl`` and ``h# pau epi`` -> ``sil``; ``ao -> aa``;
``ax ax-h -> ah``; ``axr -> er``; ``hv -> hh``; ``ix -> ih``; ``el -> l``; ``em -> m``;
``en nx -> n``; ``eng -> ng``; ``zh -> sh``; ``ux -> uw``; the glottal stop ``q`` is dropped.

Forced-aligner (MFA / ARPAbet) labels fold too: upper case and stress digits are removed
(``AA1 -> aa``), ``sil``/``sp`` -> ``sil``, empty labels and spoken noise ``spn`` are dropped.
"""
from __future__ import annotations

import re
from typing import Optional

TIMIT61 = tuple("""aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g gcl h# hh hv
ih ix iy jh k kcl l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw ux v w y z zh""".split())

FOLD_61_TO_39 = {p: p for p in TIMIT61}
FOLD_61_TO_39.update({
    "ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih", "el": "l", "em": "m",
    "en": "n", "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw",
    "bcl": "sil", "dcl": "sil", "gcl": "sil", "pcl": "sil", "tcl": "sil", "kcl": "sil",
    "h#": "sil", "pau": "sil", "epi": "sil",
    "q": None,
})

TIMIT39 = tuple(sorted({v for v in FOLD_61_TO_39.values() if v is not None}))
assert len(TIMIT61) == 61 and len(TIMIT39) == 39

# aligner (MFA, ARPAbet) silence/noise conventions
_ALIGNER_EXTRA = {"sil": "sil", "sp": "sil", "spn": None, "": None}
_STRESS = re.compile(r"(?<=[a-z])[012]$")


def fold_39(label: str) -> Optional[str]:
    """The 39-class label of a TIMIT-61 or ARPAbet label; ``None`` if it is dropped.

    Raises ``KeyError`` for a label with no class (the caller records the utterance as skipped).
    """
    key = _STRESS.sub("", label.strip().lower())
    if key in _ALIGNER_EXTRA:
        return _ALIGNER_EXTRA[key]
    return FOLD_61_TO_39[key]
