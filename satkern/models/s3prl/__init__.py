"""s3prl-format self-supervised audio transformers: Mockingjay, TERA, AudioALBERT.

* :func:`build_s3prl` -- random-weight model from a built-in name ("mockingjay-base", "tera-base",
  "audio-albert-base", "tiny-mockingjay", "tiny-tera", "tiny-audio-albert");
* :func:`load_s3prl_checkpoint` -- a real s3prl checkpoint, safely unpickled;
* :class:`S3prlTransformer` -- the model: ``extract_features(waveforms)``, ``forward(feats, lengths)``,
  ``sample_rate``, ``frame_stride``; its attention modules are :class:`S3prlSelfAttention`;
* :class:`SpecHead` -- the pre-training reconstruction head (``SpecHead`` of a checkpoint; :func:`load_spec_head`);
* :class:`S3prlSpeechModel` -- the :class:`satkern.models.SpeechModel` of this family (what ``load_model`` returns).

s3prl itself is not a dependency (it needs torchaudio); everything here is plain torch.
"""
from .builtin import BUILTIN_CONFIGS, build_s3prl, s3prl_names
from .checkpoint import (ALLOWED_GLOBALS, UntrustedCheckpointError, find_upstream_config, load_s3prl_checkpoint,
                         model_from_states, read_checkpoint)
from .features import S3prlFeatures
from .spec_head import SpecHead, load_spec_head
from .model import (S3PRL_MASK_VALUE, S3prlConfig, S3prlModelOutput, S3prlSelfAttention, S3prlTransformer,
                    position_encoding)
from .speech_model import S3prlSpeechModel

__all__ = ["build_s3prl", "load_s3prl_checkpoint", "s3prl_names", "BUILTIN_CONFIGS", "S3prlTransformer",
           "S3prlSelfAttention", "S3prlConfig", "S3prlModelOutput", "S3prlFeatures", "UntrustedCheckpointError",
           "ALLOWED_GLOBALS", "read_checkpoint", "model_from_states", "find_upstream_config", "position_encoding",
           "S3PRL_MASK_VALUE", "SpecHead", "load_spec_head", "S3prlSpeechModel"]
