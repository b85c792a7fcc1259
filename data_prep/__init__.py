"""Corpus preparation: documents -> SentencePiece tokenizer -> indexed token shards."""
