"""Where the embedded defaults live; read when called, never at import time."""

from __future__ import annotations

import os
from pathlib import Path


def citywok_home() -> Path:
    """``$CITYWOK_HOME``, or ``.citywok/`` under the working directory."""
    return Path(os.environ.get("CITYWOK_HOME") or Path.cwd() / ".citywok").absolute()
