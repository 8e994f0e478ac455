"""modules/prompt_parser.py (only ``parse_prompt_attention``, simplified).

The real parser understands ``(a:1.2)``, ``[a]``, ``(a)`` and ``BREAK``; the
stand-in gives every piece weight 1.0 and keeps ``BREAK`` (as ``["BREAK", -1]``).
"""

import re

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    res = []
    parts = re_break.split(text)
    for i, part in enumerate(parts):
        if i > 0:
            res.append(["BREAK", -1])
        if part:
            res.append([part, 1.0])
    if len(res) == 0:
        res = [["", 1.0]]
    return res
