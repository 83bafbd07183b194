"""Fixtures of the deployment tests: every kustomization rendered once per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import VARIANTS, Rendered
from tests.deploy.tools import REPO, require_tool


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rendered")


@pytest.fixture(scope="session")
def rendered(rendered_dir: Path) -> dict[str, Rendered]:
    """``kubectl kustomize`` output of the base and every overlay, by variant name."""
    kubectl = require_tool("kubectl")
    out: dict[str, Rendered] = {}
    failures = []
    for variant, directory in VARIANTS.items():
        result = subprocess.run(
            [kubectl, "kustomize", str(REPO / directory)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            failures.append(f"{directory}: {result.stderr.strip()}")
            continue
        path = rendered_dir / f"{variant}.yaml"
        path.write_text(result.stdout)
        docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        out[variant] = Rendered(variant, path, docs)
    if failures:
        pytest.fail("kubectl kustomize failed:\n" + "\n".join(failures), pytrace=False)
    return out


@pytest.fixture(scope="session")
def base(rendered: dict[str, Rendered]) -> Rendered:
    return rendered["base"]
