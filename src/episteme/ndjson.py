"""Lines of NDJSON, split at `\\n` alone.

JSON leaves U+2028, U+2029 and U+0085 unescaped inside strings, and `str.splitlines`
(with httpx's line iterators, which split the same way) breaks a line at each of them:
one such character in a stored value made the export unreadable.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator


def lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The non-blank lines of a body that arrives in `chunks`, as each is complete."""
    rest = b""
    for chunk in chunks:
        *complete, rest = (rest + chunk).split(b"\n")
        yield from (line for line in complete if line.strip())
    if rest.strip():
        yield rest


async def alines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """`lines` for a body read asynchronously."""
    rest = b""
    async for chunk in chunks:
        *complete, rest = (rest + chunk).split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if rest.strip():
        yield rest


def numbered(text: str) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a file's text, numbered from 1 as an editor counts them."""
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield n, line
