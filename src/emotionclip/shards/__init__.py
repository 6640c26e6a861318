"""The training-corpus format, written by ``prepare`` and read by ``train``: WebDataset shards of
clips (frames as JPEG, per-frame person boxes, the sentence, its sentiment) plus a manifest.

:mod:`.writer` writes samples, shards and the manifest atomically; :mod:`.reader` reads them back
as training batches (``make_train_loader`` with its ``LoaderSettings``); :mod:`.index` is the tar
index random access reads through (built from the tar headers, cached).
"""
