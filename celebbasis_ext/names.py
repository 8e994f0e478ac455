"""Celebrity names and which of them the basis can use.

A name is used only when its first and last word are each exactly one BPE
token: then position 1 holds a real first-name embedding and position 2 a
real family-name embedding (the authors' list silently truncated names that
tokenise into more pieces). The shipped list is ``data/celeb_names.txt``; a
user's own list works the same way (one name per line, ``#`` comments,
optional tab-separated ``key=value`` tags).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .errors import BadInput

DEFAULT_NAMES_FILE = Path(__file__).with_name("data") / "celeb_names.txt"


@dataclass(frozen=True)
class CelebName:
    """One line of a names file, tokenised."""

    name: str
    tags: dict = field(default_factory=dict, compare=False, hash=False)
    tokens: tuple[tuple[int, ...], ...] = ()

    @property
    def used(self) -> bool:
        """First and last word each one token (and exactly two words)."""
        return len(self.tokens) == 2 and all(len(word) == 1 for word in self.tokens)

    @property
    def token_pair(self) -> tuple[int, int]:
        return self.tokens[0][0], self.tokens[1][0]


def read_names(path: str | Path | None = None) -> list[tuple[str, dict]]:
    """Names and their tags from a names file; duplicates (case-insensitive) are dropped."""
    path = Path(path) if path is not None else DEFAULT_NAMES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"names file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"cannot read names file {path}: {error}") from None
    seen: set[str] = set()
    names = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, *raw_tags = line.split("\t")
        name = " ".join(name.split())
        key = name.casefold()
        if key in seen:
            continue
        seen.add(key)
        tags = dict(tag.split("=", 1) for tag in raw_tags if "=" in tag)
        names.append((name, tags))
    if not names:
        raise BadInput(f"names file {path} holds no names")
    return names


def tokenize_names(names: Iterable[tuple[str, dict]], tokenize: Callable[[str], list[int]]) -> list[CelebName]:
    """Tokenise each word of each name on its own (as it appears mid-prompt)."""
    return [CelebName(name, tags, tuple(tuple(tokenize(word)) for word in name.split())) for name, tags in names]


def names_digest(names: Iterable[CelebName]) -> str:
    """A short hash of the used token pairs: part of the basis cache key."""
    digest = hashlib.sha256()
    for celeb in names:
        if celeb.used:
            digest.update(f"{celeb.token_pair}".encode())
    return digest.hexdigest()[:12]
