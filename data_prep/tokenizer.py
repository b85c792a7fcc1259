"""SentencePiece training with the settings every corpus here uses."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Iterable


def train_sentencepiece(sentences: Iterable[str], vocab_size: int, out_model: str, sample_size: int = 2_000_000,
                        keep_whitespace: bool = False) -> str:
    """Trains a unigram SentencePiece model (byte fallback, digits split), writes it to out_model (whole or not at
    all) and returns that path.

    Ids: 0 <unk>, 1 <s>, 2 </s> (EOS, written between documents), no padding id.
    keep_whitespace: no normalisation at all, so decode(encode(text)) == text: newlines, indentation and runs
    of spaces (code) survive, and bits per byte count exactly the bytes the model predicts. Otherwise
    SentencePiece's default NFKC normalisation folds every run of whitespace into one space. With it, the
    model is trained on lines, not whole documents (SentencePiece 0.2.3's unigram trainer fails with a
    non-finite score on documents of several hundred kB), and a newline is a piece of its own; no "▁" is
    put before a text, so a line starts the same way at the start of a document and after a newline.
    """
    import sentencepiece as spm

    spm.set_random_generator_seed(0)  # the sentence shuffle and sampling: the same model on every run
    whitespace = {}
    if keep_whitespace:
        sentences = (line for text in sentences for line in text.split("\n") if line)
        whitespace = {"normalization_rule_name": "identity", "remove_extra_whitespaces": False,
                      "allow_whitespace_only_pieces": True, "add_dummy_prefix": False, "user_defined_symbols": ["\n"]}

    os.makedirs(os.path.dirname(os.path.abspath(out_model)), exist_ok=True)
    model = io.BytesIO()  # written by us, not by SentencePiece: its file would record the output path
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
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
        **whitespace,
    )
    with open(out_model + ".tmp", "wb") as f:
        f.write(model.getvalue())
    os.replace(out_model + ".tmp", out_model)
    return out_model


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
