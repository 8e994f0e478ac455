"""modules/sd_hijack_checkpoint.py: ``add()``/``remove()`` gradient checkpointing of ldm blocks.

The real one swaps ldm's BasicTransformerBlock/ResBlock/AttentionBlock
``forward`` for checkpointed versions (ldm models only; nothing for sgm). The
stand-in keeps the same ``stored`` bookkeeping, so tests can see whether it is on.
"""

stored = []


def add():
    if len(stored) != 0:
        return
    stored.extend(["BasicTransformerBlock.forward", "ResBlock.forward", "AttentionBlock.forward"])


def remove():
    if len(stored) == 0:
        return
    stored.clear()
