"""The worked examples of ``docs/extending.md`` are tests: every ```python block runs, alone, and its asserts hold.

Each block is executed in a fresh namespace, so a block must be self-contained
(its imports, its classes, its checks). Blocks in other languages (``diff``,
``sh``) are not run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^## (.+)$", re.MULTILINE)


def examples() -> list[tuple[str, int, str]]:
    """(section heading, line number, code) of every python block, in document order."""
    text = DOC.read_text()
    out = []
    for match in _BLOCK.finditer(text):
        headings = _HEADING.findall(text, 0, match.start())
        line = text.count("\n", 0, match.start()) + 2  # the block's first line of code
        out.append((headings[-1] if headings else "top", line, match.group(1)))
    return out


def test_the_guide_has_an_example_for_each_extension_point():
    sections = " ".join(heading.lower() for heading, _, _ in examples())
    for point in ("filter", "scorer", "source", "endpoint", "config"):
        assert point in sections, f"docs/extending.md has no python example under a heading naming {point!r}"


@pytest.mark.parametrize(
    "code, line",
    [pytest.param(code, line, id=f"{heading} (line {line})") for heading, line, code in examples()],
)
def test_example_runs(code: str, line: int) -> None:
    # padded so a traceback's line numbers are the document's; dont_inherit: not this file's __future__ imports
    compiled = compile("\n" * (line - 1) + code, str(DOC), "exec", dont_inherit=True)
    exec(compiled, {"__name__": f"extending_md_line_{line}"})  # noqa: S102 - the document's own examples
