"""The README's promises that can be checked without running the pipeline."""
from __future__ import annotations

import re

from mer_lib.runner import FIGURES_DIR, REPO_ROOT, list_notebooks

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_every_embedded_figure_is_committed():
    embedded = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", README)
    assert len(embedded) >= 5
    missing = [p for p in embedded if not (REPO_ROOT / p).is_file()]
    assert not missing, f"README embeds figures that are not in the repository: {missing}"


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
    """The README's layout block names each module of mer_lib (as ``name.py`` under its package) and no more."""
    block = README.split("## Layout", 1)[1].split("```")[1]
    listed = {name for name in re.findall(r"\b([a-z_]+)\.py\b", block) if not name.startswith("test_")}
    modules = {p.stem for p in (REPO_ROOT / "mer_lib").rglob("*.py") if p.name != "__init__.py"}
    packages = {p.name for p in (REPO_ROOT / "mer_lib").iterdir() if (p / "__init__.py").is_file()}
    assert modules - listed == set(), f"modules missing from the README layout: {sorted(modules - listed)}"
    assert listed - modules == set(), f"README layout lists modules that do not exist: {sorted(listed - modules)}"
    for package in packages:
        assert f"{package}/" in block, f"package {package}/ missing from the README layout"
