"""Replacing a folder so that a kill at any moment leaves a whole one in its place.

The new folder is written beside the old one under a hidden name, then the two are exchanged
in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``) and the old one is deleted. Where
the exchange is unavailable, the old folder moves aside first. Hidden leftovers of killed
processes (``.{name}.partial-{pid}``, ``.{name}.old-{pid}``) are removed on the next call.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
import sys
from pathlib import Path

AT_FDCWD, RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>

logger = logging.getLogger(__name__)


def hidden_sibling(place: Path, kind: str) -> Path:
    """Where this process writes (``partial``) or sets aside (``old``) a folder for ``place``."""
    return place.parent / f".{place.name}.{kind}-{os.getpid()}"


def running(pid: int) -> bool:
    """Whether process ``pid`` exists, i.e. the run that owns a leftover folder may be at work."""
    if pid == os.getpid():
        return False  # an earlier, interrupted call in this very process
    if os.name == "nt":
        return True  # os.kill would terminate the process there; leave its folders alone
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_leftovers(place: Path) -> None:
    """Delete the hidden siblings (``.{name}.partial-{pid}``, ``.{name}.old-{pid}``) of killed
    runs, which would otherwise pile up; leave those of live runs. Logs a warning for each."""
    pattern = re.compile(rf"\.{re.escape(place.name)}\.(?:partial|old)-(\d+)")
    try:
        names = sorted(os.listdir(place.parent))
    except OSError:  # no parent yet (or not a folder): nothing left over
        return
    for name in names:
        match = pattern.fullmatch(name)
        if not match:
            continue
        path, pid = place.parent / name, int(match[1])
        if running(pid):
            logger.warning("left %s alone: process %d, which made it, is still running "
                           "(another partition run at work?)", path, pid)
            continue
        shutil.rmtree(path)
        logger.warning("removed %s, left by an interrupted partition run (process %d)",
                       path, pid)


def exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 with RENAME_EXCHANGE); False where the
    system or filesystem cannot."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    renameat2 = getattr(libc, "renameat2", None)  # glibc >= 2.28
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(new: Path, place: Path) -> None:
    """Put the finished partition ``new`` at ``place``, then delete what was there.

    With the exchange, a kill at any moment leaves a whole partition (old or new) at
    ``place``. Without it, the old folder moves aside to ``.{name}.old-{pid}`` first; a kill
    between the two renames leaves ``place`` absent (rewritten by the next run, which also
    removes the leftovers), never a partial folder there.
    """
    if not place.exists():
        os.rename(new, place)
        return
    if exchange(new, place):
        old = new  # the old partition now sits at the hidden name
    else:
        old = hidden_sibling(place, "old")
        os.rename(place, old)
        try:
            os.rename(new, place)
        except BaseException:
            os.rename(old, place)
            raise
    shutil.rmtree(old)
