"""Running a caller's model without changing it: its train/eval flags are put back afterwards."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def eval_mode(model):
    """The model in eval mode for the body, every module's own train/eval flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training
