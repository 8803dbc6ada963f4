"""Where numba keeps compiled kernels (`cache=True`) when the package folder is read-only.

numba looks for a writable `__pycache__` beside the source, then its user cache folder (~/.cache/numba), and
fails at import ("no locator available") when neither is writable: a shared install run by a render farm user
without a home. configure_numba_cache() then points NUMBA_CACHE_DIR at a private folder in the temp folder.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def configure_numba_cache(source_file: str) -> None:
    """Call after `import numba` and before any `cache=True` kernel of `source_file` is defined."""
    import numba

    if numba.config.CACHE_DIR:  # the user chose (NUMBA_CACHE_DIR)
        return
    if _writable(Path(source_file).resolve().parent / "__pycache__") or _writable(_numba_user_cache()):
        return
    fallback = _private_folder(Path(tempfile.gettempdir()) / f"exgs-numba-cache-{_user_id()}")
    if fallback is not None:
        numba.config.CACHE_DIR = str(fallback)
        os.environ["NUMBA_CACHE_DIR"] = str(fallback)  # numba re-reads its config when it compiles


def _private_folder(folder: Path) -> Path | None:
    """`folder` if it is (or can be made) ours alone, else a fresh temporary folder: numba's cache holds
    pickles, so a folder another user could write must never be used."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
            return folder
        return Path(tempfile.mkdtemp(prefix="exgs-numba-cache-"))
    except (OSError, AttributeError):  # AttributeError: no getuid (Windows), where the home is writable
        return None


def _numba_user_cache() -> Path:
    from numba.misc.appdirs import AppDirs

    return Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)


def _writable(folder: Path) -> bool:
    """numba's own test: the folder can be created and a file made in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _user_id() -> str:
    return str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
