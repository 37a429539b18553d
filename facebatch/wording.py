"""How counts read in the lines people see: "1 face", "2 faces", "1 person", "3 people"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
