"""The project's files cite only what a reader of the repository can open.

A fact comes with the provider's public documentation URL or lives in ``docs/``; never
a path on the machine that wrote it or a research note outside the repository.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("rtgate", "bench", "tests", "docs", "etc", "systemd")
# Spelled in pieces so this file does not match itself.
OUTSIDE = tuple(
    "".join(parts)
    for parts in (
        ("protocols", ".md"),
        ("/wo", "rk/"),
        ("shared/", "reference"),
        ("../", "shared"),
        ("litellm-", "realtime.md"),
        ("peers", ".md"),
        ("style-", "anchors"),
    )
)


def _files() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "Makefile"]
    for folder in SCANNED:
        found += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".service", ".json"}
        ]
    return sorted(p for p in found if p.is_file() and "__pycache__" not in p.parts)


def test_no_file_cites_a_path_outside_the_repository() -> None:
    offenders: dict[str, list[str]] = {}
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        cited = [needle for needle in OUTSIDE if needle in text]
        if cited:
            offenders[str(path.relative_to(ROOT))] = cited
    assert offenders == {}, "cite a public URL or docs/ instead"
