"""Progress bars for long work (tqdm), quiet when stderr is not a terminal unless forced."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """Bars go to a terminal; set EXGS_PROGRESS=1 to force them (e.g. into a log)."""
    return sys.stderr.isatty() or bool(os.environ.get("EXGS_PROGRESS"))


def progress(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterable[T]:
    return tqdm(items, desc=desc, unit=unit, total=total, disable=not progress_enabled(), leave=False)
