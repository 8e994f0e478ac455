"""Prompt sets for the evaluation: the shipped ones and the user's files.

A prompt file has one prompt a line (``#`` comments and blank lines are
skipped); ``{}`` marks where a person's token goes: one slot for a
single-person prompt, two for a two-person prompt (filled with a pair of the
identities). CLIP reads each prompt with every slot replaced by "a person":
the token means nothing to CLIP, the rest of the prompt is what it checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import BadInput

SLOT = "{}"
PERSON = "a person"
DATA = Path(__file__).resolve().parents[1] / "data"
SHIPPED = {"single": "prompts_single.txt", "style": "prompts_style.txt", "two-person": "prompts_two-person.txt"}
MAX_PROMPT_CHARS = 400
MAX_PROMPTS = 1000


@dataclass(frozen=True)
class Prompt:
    """One prompt template: ``set`` (the file's short name), ``index`` in it, ``template`` with slots."""

    set: str
    index: int
    template: str

    @property
    def people(self) -> int:
        return self.template.count(SLOT)

    @property
    def clip_text(self) -> str:
        """What the prompt score compares the image with."""
        return self.template.replace(SLOT, PERSON)

    def fill(self, tokens: Sequence[str]) -> str:
        """The prompt with each slot filled by the next token."""
        if len(tokens) != self.people:
            raise ValueError(f"{self.template!r} needs {self.people} tokens, got {len(tokens)}")
        parts = self.template.split(SLOT)
        return parts[0] + "".join(token + part for token, part in zip(tokens, parts[1:]))

    @property
    def key(self) -> str:
        return f"{self.set}:{self.index}"


def prompt_file(spec: str) -> Path:
    """The file for a shipped set's name or a path."""
    if spec in SHIPPED:
        return DATA / SHIPPED[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise BadInput(f"no such prompt file: {spec} (or use one of: {', '.join(SHIPPED)})")
    return path


def read_prompts(spec: str) -> list[Prompt]:
    """The prompts of one set, checked: each line 1 or 2 slots, not too long; an empty file is refused."""
    path = prompt_file(spec)
    name = spec if spec in SHIPPED else path.stem
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"cannot read prompt file {path}: {getattr(error, 'strerror', None) or error}") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        slots = line.count(SLOT)
        if slots not in (1, 2):
            raise BadInput(f"{path.name} line {number}: put {{}} where the person goes (once, or twice for two "
                           f"people), found {slots}: {line[:80]}")
        if len(line) > MAX_PROMPT_CHARS:
            raise BadInput(f"{path.name} line {number}: the prompt is longer than {MAX_PROMPT_CHARS} characters")
        prompts.append(Prompt(name, len(prompts), line))
    if not prompts:
        raise BadInput(f"no prompts in {path}: write one prompt a line, with {{}} where the person goes")
    if len(prompts) > MAX_PROMPTS:
        raise BadInput(f"{path.name} has {len(prompts)} prompts; use at most {MAX_PROMPTS}")
    return prompts


def read_prompt_sets(specs: Sequence[str]) -> list[Prompt]:
    """Several sets, in order; the same set twice is refused (it would count twice)."""
    prompts, names = [], set()
    for spec in specs:
        chunk = read_prompts(spec)
        if chunk[0].set in names:
            raise BadInput(f"the prompt set {chunk[0].set!r} is given twice")
        names.add(chunk[0].set)
        prompts += chunk
    return prompts


def spread(prompts: Sequence[Prompt], count: int) -> list[Prompt]:
    """``count`` prompts spread evenly over a set (the tab's small evaluation)."""
    if count >= len(prompts):
        return list(prompts)
    return [prompts[(i * len(prompts)) // count] for i in range(count)]


def pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Who meets whom in two-person prompts: each identity with the next (a ring), so each appears twice
    with three or more identities while the count stays linear."""
    if len(names) < 2:
        return []
    if len(names) == 2:
        return [(names[0], names[1])]
    return [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]

