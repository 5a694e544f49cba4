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
