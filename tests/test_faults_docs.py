"""docs/reliability.md names a test for every fault; every name it gives must exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_test_named_in_the_reliability_doc_exists() -> None:
    doc = (REPO / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(test_[a-z0-9_]+)", doc))
    sources = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    defined = set(re.findall(r"(?:def|^)\s*(test_[a-z0-9_]+)", sources, re.MULTILINE))
    prefixes = {name for name in named if name.endswith("_")}  # `test_fuzz_*`
    missing = sorted(name for name in named - prefixes if name not in defined) + sorted(
        p for p in prefixes if not any(d.startswith(p) for d in defined)
    )
    assert len(named) > 50
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
