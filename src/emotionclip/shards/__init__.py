"""The training-corpus format, written by ``prepare`` and read by ``train``: WebDataset shards of
clips (frames as JPEG, per-frame person boxes, the sentence, its sentiment) plus a manifest.

:mod:`.writer` writes samples, shards and the manifest atomically; :mod:`.reader` streams them back
as training batches (``make_train_loader``).
"""
