"""Speech corpora for the analysis job: discovery, audio, alignments, phone folding, framing, batching."""
from .alignments import AlignmentError, Segment, Tier, parse_phn, parse_textgrid, phone_tier, read_alignment
from .audio import AudioError, audio_info, load_audio, resample, resampled_length
from .batching import BatchDataset, LoadedUtterance, length_buckets, plan_batches
from .framing import frame_label_weights
from .phones import FOLD_61_TO_39, TIMIT39, TIMIT61, fold_39
from .readers import Corpus, Utterance, collect_labels, detect_layout, discover_corpus

__all__ = ["AlignmentError", "Segment", "Tier", "parse_phn", "parse_textgrid", "phone_tier", "read_alignment",
           "AudioError", "audio_info", "load_audio", "resample", "resampled_length", "BatchDataset",
           "LoadedUtterance", "length_buckets", "plan_batches", "frame_label_weights", "FOLD_61_TO_39",
           "TIMIT39", "TIMIT61", "fold_39", "Corpus", "Utterance", "collect_labels", "detect_layout",
           "discover_corpus"]
