"""The documentation stands alone: protocol citations resolve, no outside documents are cited.

Docstrings, notebooks, tests and benchmarks cite ``docs/protocol.md`` as "protocol §N" or
"protocol §N.M"; every cited section must exist there as a heading (``## N.`` or ``### N.M``).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = REPO / "docs" / "protocol.md"

#: "protocol §6", "protocol §6.1" (a trailing full stop ends a sentence, it is not a subsection).
CITATION = re.compile(r"protocol\s+§\s*(\d+(?:\.\d+)?)")
HEADING = re.compile(r"^(?:##\s+(\d+)\.|###\s+(\d+\.\d+))\s", re.MULTILINE)

# Built from pieces so that this file does not contain the strings it forbids.
_DOC = "DESI" + "GN"
FORBIDDEN = {
    f"{_DOC}.md": re.compile(re.escape(f"{_DOC}.md")),
    f"{_DOC} <number>": re.compile(_DOC + r"\s*§?\s*\d"),
    "../" + "shared": re.compile(re.escape("../" + "shared")),
}


def _sources() -> list[Path]:
    """Every file whose text may cite the protocol."""
    files: list[Path] = []
    for pattern in ("mer_lib/**/*.py", "tests/**/*.py", "notebooks/*.ipynb", "benchmarks/**/*.py"):
        files += sorted(REPO.glob(pattern))
    files.append(REPO / "README.md")
    files += sorted((REPO / "docs").glob("*.md"))
    return [p for p in files if p.is_file() and ".ipynb_checkpoints" not in p.parts]


def _text(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    # notebooks are JSON: a section sign may be stored escaped
    return text.replace("\\u00a7", "§") if path.suffix == ".ipynb" else text


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _sections() -> set[str]:
    return {a or b for a, b in HEADING.findall(PROTOCOL.read_text(encoding="utf-8"))}


def test_protocol_has_the_numbered_sections():
    assert PROTOCOL.is_file(), f"missing {PROTOCOL.relative_to(REPO)}"
    sections = _sections()
    expected = {str(n) for n in range(1, 11)} | {"2.1", "2.2", "6.1", "6.2"}
    assert expected <= sections, f"docs/protocol.md lacks sections {sorted(expected - sections)}"


def test_every_protocol_citation_names_an_existing_section():
    sections = _sections()
    sources = _sources()
    assert sources, "no source files found"
    missing, cited = [], 0
    for path in sources:
        text = _text(path)
        for m in CITATION.finditer(text):
            cited += 1
            if m.group(1) not in sections:
                missing.append(f"{path.relative_to(REPO)}:{_line(text, m.start())}: protocol §{m.group(1)}")
    assert cited > 0, "no protocol citation found at all: is the pattern still right?"
    assert not missing, "citations of sections that docs/protocol.md does not have:\n" + "\n".join(missing)


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_no_citation_of_documents_outside_the_repository(name):
    pattern = FORBIDDEN[name]
    files = _sources() + [PROTOCOL, REPO / "reference" / "README.md"]
    hits = []
    for path in files:
        if not path.is_file():
            continue
        text = _text(path)
        hits += [f"{path.relative_to(REPO)}:{_line(text, m.start())}" for m in pattern.finditer(text)]
    assert not hits, f"{name!r} found (the repository must stand alone):\n" + "\n".join(hits)


@pytest.mark.parametrize("path", ["reference/published_runs/LICENSE", "reference/published_runs/runs.csv",
                                  "reference/madmom/README.md", "reference/README.md", "docs/protocol.md"])
def test_reference_material_and_docs_exist(path):
    assert (REPO / path).is_file(), f"missing {path}"


#: A dotted library name in prose or a docstring: ``mer_lib.attacks.engine.paper_attack``.
LIBRARY_NAME = re.compile(r"\bmer_lib(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
#: Not references: the synthetic generator's identity recorded in every generator.json (kept stable).
NOT_REFERENCES = {"mer_lib.synth"}


def _resolves(dotted: str) -> bool:
    """Import the longest importable module prefix of ``dotted``, then look the rest up as attributes."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                # a field of a dataclass (or an annotated attribute) exists on instances only
                return name in getattr(obj, "__annotations__", {}) and name == parts[-1]
            obj = getattr(obj, name)
        return True
    return False


@pytest.mark.parametrize("path", [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
                                  REPO / "reference" / "README.md",
                                  *sorted(REPO.glob("mer_lib/**/*.py")), *sorted(REPO.glob("notebooks/*.ipynb"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_library_names_in_docs_exist(path: Path) -> None:
    """Every ``mer_lib.x.y`` named in the documentation, docstrings and notebooks exists (no stale module paths)."""
    names = {name.rstrip(".") for name in LIBRARY_NAME.findall(_text(path))} - NOT_REFERENCES
    stale = sorted(name for name in names if not _resolves(name))
    assert not stale, f"{path.relative_to(REPO)} names library objects that do not exist: {stale}"
