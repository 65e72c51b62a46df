"""Where numba caches the package's compiled code: a per-user directory, never the package.

numba's default for a ``cache=True`` function is the ``__pycache__`` next to its source, i.e.
site-packages for an installed package: pip does not know those files, so ``pip uninstall``
leaves the directory behind, where it shadows a later (e.g. editable) install as a namespace
package. ``install()`` puts :class:`PackageCacheLocator` into numba's list of cache locators,
right after the one for ``NUMBA_CACHE_DIR`` (which keeps precedence, with numba's own layout and
no sources hash). For every function defined in this package it caches under::

    <user cache dir>/fastsoftmax/<version>-<sources hash>/numba-<numba version>/

- The user cache dir is ``$XDG_CACHE_HOME`` or ``~/.cache`` (Linux and other POSIX),
  ``~/Library/Caches`` (macOS), ``%LOCALAPPDATA%`` (Windows).
- The sources hash covers every file holding compiled code (``COMPILED_SOURCES``): numba checks
  only the file that defines a function, not the files it calls into (an edit of
  ``_kernels/_math.py`` alone would leave every kernel's old machine code in use), so a changed
  source gets a new directory and is compiled afresh.
- The numba version keeps environments with different numba releases from overwriting each
  other's cache index (each would recompile everything on every start).
- When that directory cannot be written (read-only or missing HOME), a private
  ``<tmp>/fastsoftmax-numba-<uid>`` directory (mode 700) is used instead; when neither works, the
  locator steps aside and numba's own locators decide.

numba fixes a function's cache directory when it is decorated, so ``install()`` must run before
any kernel module is imported (``fastsoftmax._runtime`` calls it). A user-chosen locator list
(``NUMBA_CACHE_LOCATOR_CLASSES``, numba >= 0.62) replaces numba's list and with it this locator.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from typing import NamedTuple

import numba
from numba.core import caching

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# The files with @njit(cache=True) code, relative to the package directory.
COMPILED_SOURCES = ("_kernels/*.py", "kernels.py")


class CacheDir(NamedTuple):
    """Where the package's compiled code is cached, and which rule chose it."""

    path: str
    source: str


USER_CACHE = "user cache directory"
FALLBACK = "temporary fallback (user cache directory not writable)"


def sources_hash() -> str:
    """SHA-256 (16 hex digits) over the names and contents of the files in COMPILED_SOURCES."""
    digest = hashlib.sha256()
    for pattern in COMPILED_SOURCES:
        for path in sorted(glob.glob(os.path.join(PACKAGE_DIR, *pattern.split("/")))):
            with open(path, "rb") as f:
                data = f.read()
            name = os.path.relpath(path, PACKAGE_DIR).replace(os.sep, "/").encode()
            digest.update(b"%d:%s%d:" % (len(name), name, len(data)) + data)
    return digest.hexdigest()[:16]


def cache_key() -> str:
    """``<version>-<sources hash>/numba-<numba version>``: the part below ``.../fastsoftmax/``."""
    from . import __version__  # set in __init__ before any submodule is imported

    return os.path.join(f"{__version__}-{sources_hash()}", f"numba-{numba.__version__}")


def user_cache_home() -> str:
    """The per-user cache directory of this OS (not created)."""
    home = os.path.expanduser("~")
    if sys.platform.startswith("win"):
        return os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Caches")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return xdg if os.path.isabs(xdg) else os.path.join(home, ".cache")  # XDG: relative is invalid


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _private_cache_dir() -> str:
    """``<tmp>/fastsoftmax-numba-<uid>``, created 0o700; a fresh ``mkdtemp`` if that one is unsafe.

    Cache files hold machine code, so a directory another user could have created or can write
    is never used.
    """
    uid = os.getuid() if hasattr(os, "getuid") else None
    path = os.path.join(
        tempfile.gettempdir(), f"fastsoftmax-numba-{uid if uid is not None else 'user'}"
    )
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        safe = stat.S_ISDIR(st.st_mode) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if uid is not None:
            safe = safe and st.st_uid == uid
        if safe and _writable_dir(path):
            return path
    except OSError:
        pass
    return tempfile.mkdtemp(prefix="fastsoftmax-numba-")


def choose_cache_dir() -> CacheDir | None:
    """The user cache directory for this key if writable, else the private temp one, else None."""
    try:
        key = cache_key()
    except OSError:  # sources not readable as files (e.g. a zip import): numba's locators decide
        return None
    user = os.path.join(user_cache_home(), "fastsoftmax", key)
    if _writable_dir(user):
        return CacheDir(user, USER_CACHE)
    try:
        fallback = os.path.join(_private_cache_dir(), key)
    except OSError:  # no usable temp directory at all
        return None
    return CacheDir(fallback, FALLBACK) if _writable_dir(fallback) else None


# Chosen once per process, at the first kernel decoration.
chosen_cache_dir: Callable[[], CacheDir | None] = functools.lru_cache(maxsize=None)(
    choose_cache_dir
)


def _in_package(py_file: str) -> bool:
    package = os.path.normcase(os.path.realpath(PACKAGE_DIR))
    return os.path.normcase(os.path.realpath(py_file)).startswith(package + os.sep)


class PackageCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """numba cache locator for functions defined in this package (see the module docstring).

    Source stamp and disambiguator are numba's usual ones (hash of the defining file, line).
    """

    def __init__(self, py_func: Callable, py_file: str, root: str) -> None:
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        subdir = os.path.relpath(
            os.path.dirname(os.path.realpath(py_file)), os.path.realpath(PACKAGE_DIR)
        )
        self._cache_path = os.path.normpath(os.path.join(root, subdir))

    def get_cache_path(self) -> str:
        return self._cache_path

    @classmethod
    def from_function(cls, py_func: Callable, py_file: str) -> PackageCacheLocator | None:
        if not _in_package(py_file):
            return None
        chosen = chosen_cache_dir()
        if chosen is None:
            return None
        self = cls(py_func, py_file, chosen.path)
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self


def install() -> None:
    """Insert PackageCacheLocator into numba's locators, after NUMBA_CACHE_DIR's (idempotent)."""
    # UserProvidedCacheLocator since numba 0.62, underscore-prefixed in 0.61
    user_provided = (
        getattr(caching, "UserProvidedCacheLocator", None) or caching._UserProvidedCacheLocator
    )
    locators = caching.CacheImpl._locator_classes
    # drop a copy from an earlier import of this module (importlib.reload)
    locators[:] = [
        c
        for c in locators
        if (c.__module__, c.__qualname__) != (__name__, PackageCacheLocator.__qualname__)
    ]
    position = next((i + 1 for i, c in enumerate(locators) if issubclass(c, user_provided)), 0)
    locators.insert(position, PackageCacheLocator)
