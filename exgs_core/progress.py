"""Progress bars for long work (tqdm), quiet when stderr is not a terminal unless forced."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterable[T]:
    disable = not sys.stderr.isatty() and not os.environ.get("EXGS_PROGRESS")
    return tqdm(items, desc=desc, unit=unit, total=total, disable=disable, leave=False)
