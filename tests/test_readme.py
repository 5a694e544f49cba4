"""The README's (and docs/'s) promises that can be checked without running the pipeline."""
from __future__ import annotations

import re

from mer_lib.runner import FIGURES_DIR, REPO_ROOT, list_notebooks

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
LAYOUT = (REPO_ROOT / "docs" / "layout.md").read_text(encoding="utf-8")


def test_every_embedded_figure_is_committed():
    embedded = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", README)
    assert len(embedded) >= 5
    missing = [p for p in embedded if not (REPO_ROOT / p).is_file()]
    assert not missing, f"README embeds figures that are not in the repository: {missing}"
    for doc in sorted((REPO_ROOT / "docs").glob("*.md")):
        for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text(encoding="utf-8")):
            assert (doc.parent / path).is_file(), f"{doc.name} embeds {path}, which is not in the repository"


def test_every_listed_figure_exists_for_the_default_profile_and_the_published_runs():
    # names in the mapping table: figures/<profile>_name.{png,pdf} and figures/published_name.{png,pdf}
    stems = set(re.findall(r"figures/(?:<profile>|quick|published)_([a-z0-9_]+)\.\{png,pdf\}", README))
    assert {"figure3_dmae", "figure4_true_vs_pred", "clean_performance"} <= stems
    for stem in stems:
        for prefix in ("quick", "published"):
            if prefix == "published" and stem == "bounded_dmae":
                continue  # the published logs hold no bounded attacks
            for ext in ("png", "pdf"):
                assert (FIGURES_DIR / f"{prefix}_{stem}.{ext}").is_file(), f"{prefix}_{stem}.{ext}"


def test_every_notebook_is_described():
    for nb in list_notebooks():
        assert f"`{nb.stem}`" in README, f"README does not describe notebook {nb.stem}"


def test_layout_lists_every_module_and_nothing_else():
    """docs/layout.md's layout block names each module of mer_lib (as ``name.py`` under its package) and no more."""
    block = LAYOUT.split("## Layout", 1)[1].split("```")[1]
    listed = {name for name in re.findall(r"\b([a-z_]+)\.py\b", block) if not name.startswith("test_")}
    modules = {p.stem for p in (REPO_ROOT / "mer_lib").rglob("*.py") if p.name != "__init__.py"}
    packages = {p.name for p in (REPO_ROOT / "mer_lib").iterdir() if (p / "__init__.py").is_file()}
    assert modules - listed == set(), f"modules missing from the layout in docs/layout.md: {sorted(modules - listed)}"
    assert listed - modules == set(), f"docs/layout.md lists modules that do not exist: {sorted(listed - modules)}"
    for package in packages:
        assert f"{package}/" in block, f"package {package}/ missing from the layout in docs/layout.md"


def test_the_readme_starts_the_user():
    """The README stays a start (the two commands first, about 250 lines at most); details live in docs/."""
    assert README.index("make reproduce") < README.index("##") and "make test" in README.split("##", 1)[0]
    assert len(README.splitlines()) <= 250
    for doc in ("protocol", "results", "running", "layout"):
        assert f"(docs/{doc}.md" in README, f"README does not point to docs/{doc}.md"


def test_links_between_documents_resolve():
    """Every relative Markdown link of the README and docs/ names an existing file (anchors not checked)."""
    for doc in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"
