"""numba's disk cache: per-user by default, never the package directory; NUMBA_CACHE_DIR is
honoured, and import never fails for a read-only install.

``fastsoftmax._cache`` adds a numba cache locator for the package's own files: compiled kernels go
to ``<user cache dir>/fastsoftmax/<version>-<sources hash>/numba-<version>/`` (``XDG_CACHE_HOME``
or ``~/.cache`` on Linux), or to a private directory under the system temp dir when that cannot
be written; ``NUMBA_CACHE_DIR`` comes first. The subprocess tests unset ``NUMBA_CACHE_DIR``
(``.ci/run`` sets it) unless they test it, and point ``XDG_CACHE_HOME`` at a temp dir.

The read-only tests need a file system root cannot write to (tests run as root in CI containers):
the package is copied to a temp dir that is bind-mounted read-only in a private mount namespace
(``unshare -m``). Where that is not permitted they are skipped, with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

import numba
import pytest
from conftest import needs_jit

import fastsoftmax as fs
from fastsoftmax import _cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "fastsoftmax")
TIMEOUT = 300  # a cold cache compiles the float32 softmax kernels (about 5 s)

# Imports the package, checks one call against the reference and prints what numba used.
PROBE = textwrap.dedent(r"""
    import json, os, sys, warnings
    import numba
    warnings.simplefilter("error", numba.NumbaWarning)  # a cache warning is a failure too
    import numpy as np
    import fastsoftmax as fs
    from fastsoftmax import reference as ref
    from fastsoftmax._kernels.softmax import softmax_kernel
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(fs.softmax(x), ref.softmax(x), rtol=2e-6)
    kernel = softmax_kernel.serial
    print(json.dumps({
        "file": fs.__file__,
        "cache_dir": fs.info(check_vector=False)["cache_dir"],
        "cache_dir_source": fs.info(check_vector=False)["cache_dir_source"],
        "hits": len(kernel.stats.cache_hits),
        "misses": len(kernel.stats.cache_misses),
    }))
""")


def run(
    argv: list[str], env: dict[str, str], timeout: float = TIMEOUT
) -> subprocess.CompletedProcess:
    """Run from a neutral directory: ``python -c`` puts the working directory first on sys.path."""
    return subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
    )


def probe_result(proc: subprocess.CompletedProcess) -> dict:
    import json

    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NUMBA_CACHE") and k not in ("XDG_CACHE_HOME", "PYTHONPATH")
    }
    env.update(extra)
    return env


def files_under(path: str) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]


# --------------------------------------------------------------------------- the default location


def _copy_package(dest: str) -> None:
    shutil.copytree(
        PACKAGE, os.path.join(dest, "fastsoftmax"), ignore=shutil.ignore_patterns("__pycache__")
    )


def snapshot(path: str) -> dict[str, tuple[int, float]]:
    """Every file under ``path`` with its size and modification time."""
    return {f: (os.stat(f).st_size, os.stat(f).st_mtime) for f in files_under(path)}


def user_cache_root(xdg: str) -> str:
    """Where the kernels of this fastsoftmax version are cached with XDG_CACHE_HOME=xdg."""
    return os.path.join(xdg, "fastsoftmax", f"{fs.__version__}-")


@pytest.mark.slow
@needs_jit
def test_default_cache_is_per_user_and_leaves_the_package_alone(tmp_path):
    site, xdg = str(tmp_path / "site"), str(tmp_path / "xdg")
    _copy_package(site)
    env = clean_env(PYTHONPATH=site, XDG_CACHE_HOME=xdg, PYTHONDONTWRITEBYTECODE="1")
    before = snapshot(site)
    first = probe_result(run([sys.executable, "-c", PROBE], env))
    assert first["file"].startswith(site), first  # the copy was imported
    assert snapshot(site) == before, "files written to the package directory"
    assert first["cache_dir"].startswith(user_cache_root(xdg)), first
    assert first["cache_dir_source"] == "user cache directory", first
    written = files_under(os.path.join(xdg, "fastsoftmax"))
    assert any(f.endswith(".nbi") for f in written) and any(f.endswith(".nbc") for f in written)
    # a second process loads the kernel from there instead of compiling it
    second = probe_result(run([sys.executable, "-c", PROBE], env))
    assert second["cache_dir"] == first["cache_dir"] and second["hits"] >= 1, second
    assert second["misses"] == 0, second


CACHE_DIR_ONLY = (
    "import fastsoftmax as fs; print(fs.info(initialize=False, check_vector=False)['cache_dir'])"
)


@pytest.mark.slow
@needs_jit
def test_changed_kernel_source_gets_a_new_cache_directory(tmp_path):
    """numba checks only the file defining a kernel: an edit of ``_kernels/_math.py`` (inlined into
    every kernel) must still change where the kernels are cached, or old machine code runs."""
    site, xdg = str(tmp_path / "site"), str(tmp_path / "xdg")
    _copy_package(site)
    env = clean_env(PYTHONPATH=site, XDG_CACHE_HOME=xdg, PYTHONDONTWRITEBYTECODE="1")

    def cache_dir() -> str:
        proc = run([sys.executable, "-c", CACHE_DIR_ONLY], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip().splitlines()[-1]

    original = cache_dir()
    with open(os.path.join(site, "fastsoftmax", "_kernels", "_math.py"), "a") as f:
        f.write("\n# edited\n")
    edited = cache_dir()
    assert edited != original, "a changed kernel source would be served the old cache"
    assert original.startswith(user_cache_root(xdg)) and edited.startswith(user_cache_root(xdg))
    # files without compiled code are not part of the key: editing them costs no recompilation
    with open(os.path.join(site, "fastsoftmax", "softmax.py"), "a") as f:
        f.write("\n# edited\n")
    assert cache_dir() == edited


@pytest.mark.slow
@needs_jit
def test_unwritable_cache_home_falls_back_to_a_private_temp_dir(tmp_path):
    site, tmp = str(tmp_path / "site"), str(tmp_path / "tmp")
    _copy_package(site)
    os.mkdir(tmp)
    blocker = (
        tmp_path / "file"
    )  # a file where a directory would be needed: unwritable even for root
    blocker.write_text("")
    env = clean_env(
        PYTHONPATH=site,
        XDG_CACHE_HOME=str(blocker / "cache"),
        HOME=str(blocker / "home"),
        TMPDIR=tmp,
        PYTHONDONTWRITEBYTECODE="1",
    )
    before = snapshot(site)
    result = probe_result(run([sys.executable, "-c", PROBE], env))
    assert result["cache_dir_source"].startswith("temporary fallback"), result
    fallback = os.path.join(
        tmp, f"fastsoftmax-numba-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    )
    assert result["cache_dir"].startswith(os.path.join(fallback, f"{fs.__version__}-")), result
    assert stat.S_IMODE(os.stat(fallback).st_mode) & 0o077 == 0  # private: holds machine code
    assert any(f.endswith(".nbi") for f in files_under(fallback))
    assert snapshot(site) == before, "files written to the package directory"


def _pip_install_unavailable() -> str | None:
    import importlib.util

    if importlib.util.find_spec("setuptools") is None:
        return "needs setuptools in the test environment (builds without network access)"
    import importlib.metadata

    setuptools_version = importlib.metadata.version("setuptools")
    if tuple(int(p) for p in setuptools_version.split(".")[:1] if p.isdigit()) < (77,):
        # pyproject.toml's build requirement (the SPDX license string); without build isolation
        # the environment's own setuptools builds the package
        return f"needs setuptools >= 77 in the test environment, found {setuptools_version}"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=False
    )
    version = proc.stdout.split()[1] if proc.returncode == 0 else "0"
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (22, 3):
        return "needs pip >= 22.3 (pip --python)"
    return None


@pytest.mark.slow
@needs_jit
def test_pip_uninstall_leaves_no_package_directory(tmp_path):
    """Install into a throwaway venv, run a kernel, uninstall: nothing of the package is left (a
    leftover ``fastsoftmax/`` would import as a namespace package and shadow a later install)."""
    reason = _pip_install_unavailable()
    if reason:
        pytest.skip(reason)
    import sysconfig

    src, venv, xdg = tmp_path / "src", tmp_path / "venv", str(tmp_path / "xdg")
    src.mkdir()
    _copy_package(str(src))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src)
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = str(venv / ("Scripts" if sys.platform.startswith("win") else "bin") / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # numba, numpy and setuptools come from this environment (a path line, not its .pth files)
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    with open(os.path.join(site, "outer-environment.pth"), "w") as f:
        f.write("\n".join(paths) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python]
    env = clean_env(XDG_CACHE_HOME=xdg, PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", str(src)], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    installed = os.path.join(site, "fastsoftmax")

    result = probe_result(run([python, "-c", PROBE], env))
    assert result["file"].startswith(installed), result

    proc = run([*pip, "uninstall", "-y", "fastsoftmax"], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert not os.path.exists(installed), files_under(installed)
    assert result["cache_dir"].startswith(user_cache_root(xdg)), result


# --------------------------------------------------------------------------- NUMBA_CACHE_DIR


@pytest.mark.slow
@needs_jit
def test_numba_cache_dir_is_honoured(tmp_path):
    cache, xdg = tmp_path / "numba-cache", str(tmp_path / "xdg")
    env = clean_env(NUMBA_CACHE_DIR=str(cache), PYTHONPATH=ROOT, XDG_CACHE_HOME=xdg)
    first = probe_result(run([sys.executable, "-c", PROBE], env))
    assert first["cache_dir"].startswith(str(cache)), first
    assert first["cache_dir_source"] == "NUMBA_CACHE_DIR"
    written = files_under(str(cache))
    assert any(f.endswith(".nbi") for f in written) and any(f.endswith(".nbc") for f in written)
    assert any("softmax" in os.path.basename(f) for f in written), written
    assert not files_under(xdg), "the user cache directory was written too"
    # a second process loads the kernel from there instead of compiling it
    second = probe_result(run([sys.executable, "-c", PROBE], env))
    assert second["hits"] >= 1 and second["misses"] == 0, second


SERIAL_VS_PARALLEL = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import fastsoftmax
    from fastsoftmax._kernels.softmax import softmax_kernel
    x = np.ones((4, 5), np.float32)
    args = (x, np.float32(1.0), np.empty_like(x))
    nargs = softmax_kernel.serial.py_func.__code__.co_argcount
    args = args + (None,) * (nargs - len(args))  # e.g. a mask argument
    report = {}
    for variant in sys.argv[1:]:
        kernel = getattr(softmax_kernel, variant)
        kernel(*args)
        report[variant] = {"hits": len(kernel.stats.cache_hits),
                           "misses": len(kernel.stats.cache_misses)}
    print(json.dumps(report))
""")


@pytest.mark.slow
@needs_jit
@pytest.mark.parametrize("where", ["NUMBA_CACHE_DIR", "XDG_CACHE_HOME"])
def test_serial_and_parallel_kernels_never_load_each_others_code(tmp_path, where):
    """numba's cache key ignores compile options (numba issue #6845): if the serial and parallel
    kernels were compiled from one function under one name, a process would load the parallel
    machine code for the "serial" kernel (or the reverse) - parallel regions where the launcher
    promised none (workqueue aborts, a forked omp child dies) or no parallelism at all."""
    env = clean_env(**{where: str(tmp_path / "cache")}, PYTHONPATH=ROOT)

    def variants(*names: str) -> dict:
        import json

        proc = run([sys.executable, "-c", SERIAL_VS_PARALLEL, *names], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert variants("parallel") == {"parallel": {"hits": 0, "misses": 1}}
    assert variants("serial") == {"serial": {"hits": 0, "misses": 1}}, (
        "serial loaded the parallel code"
    )
    both = variants("serial", "parallel")
    assert both == {"serial": {"hits": 1, "misses": 0}, "parallel": {"hits": 1, "misses": 0}}, both


# --------------------------------------------------------------------------- read-only installs


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
            proc = subprocess.run(
                _readonly_argv(d, ["sh", "-c", f'touch "{d}/x"']),
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
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


@pytest.mark.slow
@needs_jit
def test_import_works_with_read_only_package_and_home(readonly_site):
    site, tmp = readonly_site
    env = clean_env(PYTHONPATH=site, HOME=os.path.join(site, "home"), TMPDIR=tmp)
    check_ro = textwrap.dedent(f"""
        try:
            open({os.path.join(site, "probe")!r}, "w")
            raise SystemExit("the site directory is writable")
        except OSError:
            pass
    """)
    result = probe_result(run(_readonly_argv(site, [sys.executable, "-c", check_ro + PROBE]), env))
    assert result["file"].startswith(site), result  # the read-only copy was imported
    assert result["cache_dir"].startswith(os.path.join(tmp, "fastsoftmax-numba-")), result
    assert result["cache_dir_source"].startswith("temporary fallback"), result
    fallback = os.path.join(tmp, os.path.relpath(result["cache_dir"], tmp).split(os.sep)[0])
    mode = stat.S_IMODE(os.stat(fallback).st_mode)
    assert mode & 0o077 == 0, oct(mode)  # private: holds machine code
    assert any(f.endswith(".nbi") for f in files_under(fallback))
    # and again, now loading from the fallback cache
    again = probe_result(run(_readonly_argv(site, [sys.executable, "-c", PROBE]), env))
    assert again["cache_dir"] == result["cache_dir"] and again["hits"] >= 1, again


@pytest.mark.slow
@needs_jit
@pytest.mark.skipif(
    tuple(map(int, numba.__version__.split(".")[:2])) < (0, 62),
    reason="NUMBA_CACHE_LOCATOR_CLASSES needs numba >= 0.62",
)
def test_read_only_install_without_the_fallback_really_fails(readonly_site):
    """The hazard is real: restricted to numba's usual locators, the same import raises."""
    site, tmp = readonly_site
    env = clean_env(
        PYTHONPATH=site,
        HOME=os.path.join(site, "home"),
        TMPDIR=tmp,
        NUMBA_CACHE_LOCATOR_CLASSES="InTreeCacheLocator,UserWideCacheLocator",
    )
    proc = run(_readonly_argv(site, [sys.executable, "-c", "import fastsoftmax"]), env)
    assert proc.returncode != 0 and "cannot cache function" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
@needs_jit
def test_read_only_package_with_writable_home_uses_the_user_cache(readonly_site, tmp_path):
    """The fallback is used only when needed: a writable HOME gets the per-user cache."""
    site, tmp = readonly_site
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(PYTHONPATH=site, HOME=str(home), TMPDIR=tmp)
    result = probe_result(run(_readonly_argv(site, [sys.executable, "-c", PROBE]), env))
    assert result["cache_dir"].startswith(user_cache_root(str(home / ".cache"))), result
    assert result["cache_dir_source"] == "user cache directory", result


# ----------------------------------------------------------------------- the locator, in-process


def test_locator_comes_right_after_numba_cache_dir():
    from numba.core import caching

    locators = caching.CacheImpl._locator_classes
    assert locators.index(_cache.PackageCacheLocator) == 1, locators
    assert locators[0].__name__.lstrip("_") == "UserProvidedCacheLocator"
    _cache.install()  # idempotent
    assert (
        locators.count(_cache.PackageCacheLocator) == 1
        and locators[1] is _cache.PackageCacheLocator
    )


def test_locator_handles_only_this_packages_files(tmp_path):
    other = tmp_path / "mod.py"
    other.write_text("x = 1\n")

    def probe():  # pragma: no cover - only its code object is used
        pass

    assert _cache.PackageCacheLocator.from_function(probe, str(other)) is None
    mine = _cache.PackageCacheLocator.from_function(
        probe, os.path.join(PACKAGE, "_kernels", "_math.py")
    )
    if mine is not None:  # None only when no cache directory could be written
        assert mine.get_cache_path() == os.path.join(_cache.chosen_cache_dir().path, "_kernels")


JIT_USE = re.compile(
    r"^from numba\S* import .*\b(njit|jit|overload\w*|register_jitable)\b"
    r"|\bnumba\.(njit|jit)\(",
    re.MULTILINE,
)


def test_every_file_with_compiled_code_is_in_the_key():
    """A file whose code can end up in a cached kernel must be part of the cache key."""
    import fnmatch

    compiled = set()
    for f in files_under(PACKAGE):
        if f.endswith(".py") and "__pycache__" not in f:
            with open(f, encoding="utf-8") as source:
                if JIT_USE.search(source.read()):
                    compiled.add(os.path.relpath(f, PACKAGE).replace(os.sep, "/"))
    compiled.discard("_info.py")  # an uncached probe loop, called by nothing else
    compiled.discard("bench/overhead.py")  # an uncached timing loop around a kernel
    assert compiled
    for name in compiled:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in _cache.COMPILED_SOURCES), name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG layout")
def test_user_cache_home_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.user_cache_home() == str(tmp_path / "xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid per the XDG spec: ignored
    assert _cache.user_cache_home() == str(tmp_path / "home" / ".cache")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _cache.user_cache_home() == str(tmp_path / "home" / ".cache")


def test_choose_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(_cache, "user_cache_home", lambda: str(tmp_path / "user"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    chosen = _cache.choose_cache_dir()
    assert chosen == (
        os.path.join(str(tmp_path / "user"), "fastsoftmax", _cache.cache_key()),
        _cache.USER_CACHE,
    )
    (tmp_path / "blocker").write_text("")
    monkeypatch.setattr(_cache, "user_cache_home", lambda: str(tmp_path / "blocker" / "user"))
    chosen = _cache.choose_cache_dir()
    assert chosen.source == _cache.FALLBACK and chosen.path.startswith(str(tmp_path / "tmp"))

    def no_temp():
        raise FileNotFoundError("No usable temporary directory found")

    monkeypatch.setattr(_cache, "_private_cache_dir", no_temp)
    assert _cache.choose_cache_dir() is None  # numba's own locators decide


def test_cache_key_has_version_sources_and_numba():
    import numba

    key = _cache.cache_key()
    assert key.startswith(f"{fs.__version__}-{_cache.sources_hash()}")
    assert key.endswith(f"numba-{numba.__version__}")
    assert len(_cache.sources_hash()) == 16


# --------------------------------------------------------------------------- the fallback directory


def test_fallback_directory_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = _cache._private_cache_dir()
    assert os.path.dirname(path) == str(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
    assert _cache._private_cache_dir() == path  # stable: later processes reuse the cache


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_fallback_directory_refuses_one_others_can_write(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"fastsoftmax-numba-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)  # e.g. made by another user to plant cache files
    path = _cache._private_cache_dir()
    assert path != str(planted) and os.path.dirname(path) == str(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0


def test_fallback_directory_refuses_a_symlink(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    (tmp_path / f"fastsoftmax-numba-{uid}").symlink_to(target)
    path = _cache._private_cache_dir()
    assert not os.path.islink(path) and path != str(target)


def test_writable_dir_false_for_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    assert not _cache._writable_dir(str(f / "sub"))
