"""SentencePiece training with the settings every corpus here uses."""

from __future__ import annotations

import hashlib
import os
from typing import Iterable


def train_sentencepiece(sentences: Iterable[str], vocab_size: int, out_model: str, sample_size: int = 2_000_000) -> str:
    """Trains a unigram SentencePiece model (byte fallback, digits split) and returns its path.

    Ids: 0 <unk>, 1 <s>, 2 </s> (EOS, written between documents), no padding id.
    """
    import sentencepiece as spm

    os.makedirs(os.path.dirname(os.path.abspath(out_model)), exist_ok=True)
    prefix = out_model[:-len(".model")] if out_model.endswith(".model") else out_model
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type="unigram",
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        input_sentence_size=sample_size,
        # Documents are passed whole; the default limit (4192 bytes) would silently drop long ones.
        max_sentence_length=1 << 24,
        shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    return prefix + ".model"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
