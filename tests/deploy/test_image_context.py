"""What the Dockerfile copies into the image holds real files: `COPY` copies a symbolic link as
a link, so one pointing outside the copied folder dangles in the image (as
examples/questions.txt once did, leaving the compose demo profile nothing to submit)."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def context_entries() -> list[Path]:
    """The top-level files and folders the allow-list .dockerignore lets into the context."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    assert "*" in patterns, ".dockerignore is an allow-list: '*' first, then '!entries'"
    return sorted(
        path for path in ROOT.iterdir() if any(fnmatch.fnmatch(path.name, a) for a in allowed)
    )


def copy_sources() -> list[str]:
    """The context paths of every `COPY` (not `COPY --from`: those come from another stage)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    sources = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        arguments = [w for w in words[1:] if not w.startswith("--")]
        sources += arguments[:-1]
    return sources


def links_under(path: Path) -> list[Path]:
    if path.is_symlink() or path.is_file():
        return [path] if path.is_symlink() else []
    found = []
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            candidate = Path(folder) / name
            if candidate.is_symlink():
                found.append(candidate)
    return found


def escapes(link: Path, base: Path) -> bool:
    return not link.resolve().is_relative_to(base.resolve())


def test_the_dockerfile_copies_folders_of_the_context() -> None:
    sources = copy_sources()
    assert "." in sources and "examples/" in sources
    names = {path.name for path in context_entries()}
    for source in sources:
        assert source == "." or source.strip("/").split("/")[0] in names, source


def test_no_copied_link_points_outside_what_is_copied() -> None:
    bad = []
    for source in copy_sources():
        if source == ".":
            for entry in context_entries():
                bad += [link for link in links_under(entry) if escapes(link, ROOT)]
        else:
            base = ROOT / source
            bad += [link for link in links_under(base) if escapes(link, base)]
    assert bad == [], f"links that dangle in the image: {[str(b.relative_to(ROOT)) for b in bad]}"


def test_the_sample_batch_the_demo_profile_submits_is_a_real_file() -> None:
    questions = ROOT / "examples" / "questions.txt"
    assert questions.is_file() and not questions.is_symlink()
    assert len(questions.read_text().splitlines()) >= 5
