"""Safe file writing: nothing the user had is overwritten by a half-written file."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

_TMP_SUFFIX = ".tmp"
_cleaned_folders: set[str] = set()  # each folder is scanned once per process (render writes thousands of frames)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds.

    The file gets the permissions a plain open() would give it (the umask, or the mode of the file it
    replaces), not the temporary file's 0600. The temporary's name holds this host and process id, so a
    later write to the same folder deletes those a killed process left behind. An OSError (disk full,
    permission) names `path`, never the temporary.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=_TMP_SUFFIX, dir=path.parent)
    except OSError as error:
        raise _naming(error, path) from None
    try:
        if hasattr(os, "fchmod"):  # not on Windows, where mkstemp's mode is not restrictive anyway
            os.fchmod(fd, _target_mode(path))
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(error, OSError) and error.filename in (None, tmp_name):
            raise _naming(error, path) from None
        raise


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{_host()}.{os.getpid()}."


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _target_mode(path: Path) -> int:
    """The mode of the file being replaced, or 0666 minus the umask for a new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _naming(error: OSError, path: Path) -> OSError:
    """The same error, about `path`."""
    return type(error)(error.errno, error.strerror or str(error), os.fspath(path))


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporaries of atomic_write calls on this host whose process no longer exists (POSIX only:
    on Windows os.kill cannot test for a process)."""
    key = os.path.abspath(folder)
    if os.name != "posix" or key in _cleaned_folders:
        return
    _cleaned_folders.add(key)
    pattern = re.compile(r"\..+\." + re.escape(_host()) + r"\.(\d+)\..*" + re.escape(_TMP_SUFFIX) + r"\Z")
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.name.startswith(".")]
    except OSError:
        return
    for name in names:
        match = pattern.match(name)
        if match and not _process_exists(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(folder / name)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
