"""numba's disk cache: NUMBA_CACHE_DIR is honoured, and import never fails for a read-only install.

numba chooses a kernel's cache directory when the kernel is decorated (at import): first
``NUMBA_CACHE_DIR``, then the package's ``__pycache__``, then the user cache directory
(``~/.cache/numba``); when none is writable it raises ``RuntimeError: cannot cache function``.
``fastsoftmax._runtime`` then points numba at a private directory under the system temp dir.

The read-only tests need a file system root cannot write to (tests run as root in CI containers):
the package is copied to a temp dir that is bind-mounted read-only in a private mount namespace
(``unshare -m``). Where that is not permitted they are skipped, with the reason.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from conftest import needs_jit

import fastsoftmax as fs
from fastsoftmax import _runtime
from fastsoftmax import reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "fastsoftmax")
TIMEOUT = 900  # a cold cache compiles the float32 softmax kernels

# Imports the package, checks one call against the reference and prints what numba used.
PROBE = textwrap.dedent(r'''
    import json, os, sys, warnings
    import numba
    warnings.simplefilter("error", numba.NumbaWarning)  # a cache warning is a failure too
    import numpy as np
    import fastsoftmax as fs
    from fastsoftmax import reference as ref
    from fastsoftmax import _runtime
    from fastsoftmax._kernels.softmax import softmax_rows
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(fs.softmax(x), ref.softmax(x), rtol=2e-6)
    kernel = softmax_rows.serial
    print(json.dumps({
        "file": fs.__file__,
        "cache_dir": fs.info(check_vector=False)["cache_dir"],
        "cache_dir_source": fs.info(check_vector=False)["cache_dir_source"],
        "fallback": _runtime.CACHE_FALLBACK_DIR,
        "hits": len(kernel.stats.cache_hits),
        "misses": len(kernel.stats.cache_misses),
    }))
''')


def run(argv: list[str], env: dict[str, str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run from a neutral directory: ``python -c`` puts the working directory first on sys.path."""
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=timeout,
                          cwd=tempfile.gettempdir())


def probe_result(proc: subprocess.CompletedProcess) -> dict:
    import json

    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NUMBA_CACHE") and k not in ("XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(extra)
    return env


def files_under(path: str) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]


# --------------------------------------------------------------------------- NUMBA_CACHE_DIR


@needs_jit
def test_numba_cache_dir_is_honoured(tmp_path):
    cache = tmp_path / "numba-cache"
    env = clean_env(NUMBA_CACHE_DIR=str(cache), PYTHONPATH=ROOT)
    first = probe_result(run([sys.executable, "-c", PROBE], env))
    assert first["cache_dir"].startswith(str(cache)), first
    assert first["cache_dir_source"] == "NUMBA_CACHE_DIR"
    assert first["fallback"] is None
    written = files_under(str(cache))
    assert any(f.endswith(".nbi") for f in written) and any(f.endswith(".nbc") for f in written)
    assert any("softmax" in os.path.basename(f) for f in written), written
    # a second process loads the kernel from there instead of compiling it
    second = probe_result(run([sys.executable, "-c", PROBE], env))
    assert second["hits"] >= 1 and second["misses"] == 0, second


SERIAL_VS_PARALLEL = textwrap.dedent(r'''
    import json, sys
    import numpy as np
    import fastsoftmax
    from fastsoftmax._kernels.softmax import softmax_rows
    x = np.ones((4, 5), np.float32)
    args = (x, np.float32(1.0), np.empty_like(x))
    nargs = softmax_rows.serial.py_func.__code__.co_argcount
    args = args + (None,) * (nargs - len(args))  # e.g. a mask argument
    report = {}
    for variant in sys.argv[1:]:
        kernel = getattr(softmax_rows, variant)
        kernel(*args)
        report[variant] = {"hits": len(kernel.stats.cache_hits),
                           "misses": len(kernel.stats.cache_misses)}
    print(json.dumps(report))
''')


@needs_jit
def test_serial_and_parallel_kernels_never_load_each_others_code(tmp_path):
    """numba's cache key ignores compile options (numba issue #6845): if the serial and parallel
    kernels were compiled from one function under one name, a process would load the parallel
    machine code for the "serial" kernel (or the reverse) - parallel regions where the launcher
    promised none (workqueue aborts, a forked omp child dies) or no parallelism at all."""
    env = clean_env(NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT)

    def variants(*names: str) -> dict:
        import json

        proc = run([sys.executable, "-c", SERIAL_VS_PARALLEL, *names], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert variants("parallel") == {"parallel": {"hits": 0, "misses": 1}}
    assert variants("serial") == {"serial": {"hits": 0, "misses": 1}}, "serial loaded the parallel code"
    both = variants("serial", "parallel")
    assert both == {"serial": {"hits": 1, "misses": 0}, "parallel": {"hits": 1, "misses": 0}}, both


# --------------------------------------------------------------------------- read-only installs


def _copy_package(dest: str) -> None:
    shutil.copytree(PACKAGE, os.path.join(dest, "fastsoftmax"),
                    ignore=shutil.ignore_patterns("__pycache__"))


READONLY_SHELL = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'


def _readonly_argv(directory: str, argv: list[str]) -> list[str]:
    """``argv`` run with ``directory`` read-only (private mount namespace, nothing leaks out)."""
    return ["unshare", "-m", "sh", "-c", READONLY_SHELL, directory, *argv]


_readonly_reason: list[str | None] = []


def readonly_unavailable() -> str | None:
    """None if a read-only bind mount works here (and really stops writes), else why not."""
    if _readonly_reason:
        return _readonly_reason[0]
    reason = None
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        reason = "needs Linux and unshare(1)"
    else:
        with tempfile.TemporaryDirectory() as d:
            proc = subprocess.run(_readonly_argv(d, ["sh", "-c", f'touch "{d}/x"']),
                                  capture_output=True, text=True, check=False, timeout=60)
            if proc.returncode == 0:
                reason = "a read-only bind mount did not stop writes"
            elif "Read-only file system" not in proc.stderr:
                reason = f"cannot make a read-only bind mount here: {proc.stderr.strip()[-300:]}"
    _readonly_reason.append(reason)
    return reason


@pytest.fixture
def readonly_site(tmp_path):
    """(site dir holding a copy of the package and an empty home, writable temp dir); the site
    dir is made read-only only inside the subprocess."""
    reason = readonly_unavailable()
    if reason:
        pytest.skip(reason)
    site = tmp_path / "site"
    (site / "home").mkdir(parents=True)
    _copy_package(str(site))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return str(site), str(tmp)


@needs_jit
def test_import_works_with_read_only_package_and_home(readonly_site):
    site, tmp = readonly_site
    env = clean_env(PYTHONPATH=site, HOME=os.path.join(site, "home"), TMPDIR=tmp)
    check_ro = textwrap.dedent(f"""
        try:
            open({os.path.join(site, 'probe')!r}, "w")
            raise SystemExit("the site directory is writable")
        except OSError:
            pass
    """)
    result = probe_result(run(_readonly_argv(site, [sys.executable, "-c", check_ro + PROBE]), env))
    assert result["file"].startswith(site), result  # the read-only copy was imported
    assert result["fallback"] is not None and result["fallback"].startswith(tmp), result
    assert result["cache_dir"].startswith(result["fallback"]), result
    assert result["cache_dir_source"].startswith("temporary fallback"), result
    mode = stat.S_IMODE(os.stat(result["fallback"]).st_mode)
    assert mode & 0o077 == 0, oct(mode)  # private: holds machine code
    assert any(f.endswith(".nbi") for f in files_under(result["fallback"]))
    # and again, now loading from the fallback cache
    again = probe_result(run(_readonly_argv(site, [sys.executable, "-c", PROBE]), env))
    assert again["fallback"] == result["fallback"] and again["hits"] >= 1, again


@needs_jit
def test_read_only_install_without_the_fallback_really_fails(readonly_site):
    """The hazard is real: restricted to numba's usual locators, the same import raises."""
    site, tmp = readonly_site
    env = clean_env(PYTHONPATH=site, HOME=os.path.join(site, "home"), TMPDIR=tmp,
                    NUMBA_CACHE_LOCATOR_CLASSES="InTreeCacheLocator,UserWideCacheLocator")
    proc = run(_readonly_argv(site, [sys.executable, "-c", "import fastsoftmax"]), env)
    assert proc.returncode != 0 and "cannot cache function" in proc.stderr, proc.stderr[-2000:]


@needs_jit
def test_read_only_package_with_writable_home_uses_the_user_cache(readonly_site, tmp_path):
    """The fallback is used only when needed: a writable HOME gets numba's own user cache."""
    site, tmp = readonly_site
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(PYTHONPATH=site, HOME=str(home), TMPDIR=tmp)
    result = probe_result(run(_readonly_argv(site, [sys.executable, "-c", PROBE]), env))
    assert result["fallback"] is None, result
    assert result["cache_dir"].startswith(str(home / ".cache" / "numba")), result
    assert result["cache_dir_source"] == "user cache directory", result


# --------------------------------------------------------------------------- the fallback directory


def test_fallback_directory_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = _runtime._private_cache_dir()
    assert os.path.dirname(path) == str(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
    assert _runtime._private_cache_dir() == path  # stable: later processes reuse the cache


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_fallback_directory_refuses_one_others_can_write(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"fastsoftmax-numba-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)  # e.g. made by another user to plant cache files
    path = _runtime._private_cache_dir()
    assert path != str(planted) and os.path.dirname(path) == str(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0


def test_fallback_directory_refuses_a_symlink(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    (tmp_path / f"fastsoftmax-numba-{uid}").symlink_to(target)
    path = _runtime._private_cache_dir()
    assert not os.path.islink(path) and path != str(target)


def test_no_fallback_in_this_writable_checkout():
    """Here the package directory is writable: numba's own choice is kept."""
    assert _runtime.CACHE_FALLBACK_DIR is None or not os.access(PACKAGE, os.W_OK)
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(fs.softmax(x), ref.softmax(x), rtol=1e-12)


# --------------------------------------------------------------------------- the decision, in-process


def _cache_impl():
    from numba.core import caching

    return getattr(caching, "CacheImpl", None) or caching._CacheImpl


def test_numba_can_cache_follows_numbas_locators(tmp_path, monkeypatch):
    import numba

    monkeypatch.setattr(numba.config, "CACHE_DIR", "")  # as without NUMBA_CACHE_DIR (CI sets it)
    source = tmp_path / "pkg" / "mod.py"
    source.parent.mkdir()
    source.write_text("x = 1\n")
    assert _runtime._numba_can_cache(str(source))  # writable __pycache__ next to it
    assert (tmp_path / "pkg" / "__pycache__").is_dir()

    class Nowhere:
        @classmethod
        def from_function(cls, py_func, py_file):
            return None

    class Broken:
        @classmethod
        def from_function(cls, py_func, py_file):
            raise RuntimeError("cannot even try")

    monkeypatch.setattr(_cache_impl(), "_locator_classes", [Broken, Nowhere])
    assert not _runtime._numba_can_cache(str(source))


def test_numba_can_cache_without_numba_internals(tmp_path, monkeypatch):
    """If numba's private locator list moves, the three usual places are checked directly."""
    monkeypatch.delattr(_cache_impl(), "_locator_classes")
    source = tmp_path / "pkg" / "mod.py"
    source.parent.mkdir()
    source.write_text("x = 1\n")
    monkeypatch.setattr(_runtime.numba.config, "CACHE_DIR", "")
    assert _runtime._numba_can_cache(str(source))
    missing = tmp_path / "no" / "such" / "file.py"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _runtime._numba_can_cache(str(missing))  # the user cache directory can be made
    assert _runtime._writable_dir(str(tmp_path / "xdg" / "numba"))


def test_writable_dir_false_for_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    assert not _runtime._writable_dir(str(f / "sub"))


def test_configure_cache_only_when_numba_has_nowhere(tmp_path, monkeypatch):
    monkeypatch.setattr(_runtime.numba.config, "CACHE_DIR", _runtime.numba.config.CACHE_DIR)
    monkeypatch.setattr(_runtime.numba.config, "CACHE_LOCATOR_CLASSES", "")
    monkeypatch.setattr(_runtime.numba.config, "DISABLE_JIT", False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(_runtime, "_numba_can_cache", lambda py_file: True)
    assert _runtime._configure_cache() is None
    monkeypatch.setattr(_runtime, "_numba_can_cache", lambda py_file: False)
    path = _runtime._configure_cache()
    assert path is not None and os.path.dirname(path) == str(tmp_path)
    assert _runtime.numba.config.CACHE_DIR == path
    # user-chosen locators or no JIT: hands off
    monkeypatch.setattr(_runtime.numba.config, "CACHE_LOCATOR_CLASSES", "InTreeCacheLocator")
    assert _runtime._configure_cache() is None
    monkeypatch.setattr(_runtime.numba.config, "CACHE_LOCATOR_CLASSES", "")
    monkeypatch.setattr(_runtime.numba.config, "DISABLE_JIT", True)
    assert _runtime._configure_cache() is None


def test_configure_cache_without_any_temp_dir(monkeypatch):
    def no_temp():
        raise FileNotFoundError("No usable temporary directory found")

    monkeypatch.setattr(_runtime.numba.config, "CACHE_DIR", _runtime.numba.config.CACHE_DIR)
    monkeypatch.setattr(_runtime.numba.config, "CACHE_LOCATOR_CLASSES", "")
    monkeypatch.setattr(_runtime.numba.config, "DISABLE_JIT", False)
    monkeypatch.setattr(_runtime, "_numba_can_cache", lambda py_file: False)
    monkeypatch.setattr(_runtime, "_private_cache_dir", no_temp)
    before = _runtime.numba.config.CACHE_DIR
    assert _runtime._configure_cache() is None
    assert _runtime.numba.config.CACHE_DIR == before
