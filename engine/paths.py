"""Where things live: the repo's assets and locales, and the user's workdir (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
LOCALES = ROOT / "locales"
CONFIGS = ASSETS / "configs"
DATA = ASSETS / "data"


def default_workdir() -> Path:
    return Path(os.environ.get("TUNEBOARD_HOME") or "tuneboard-work").resolve()


def runs_dir(workdir: str | os.PathLike | None = None) -> Path:
    return Path(workdir or default_workdir()) / "runs"


def models_dir(workdir: str | os.PathLike | None = None) -> Path:
    return Path(workdir or default_workdir()) / "models"
