"""Build script: the optional compiled kernels of the ``cython`` backend.

Everything else is in pyproject.toml. The extension ``fastxent._backends._cython._kernels``
is optional: when it cannot be built (no C compiler, no Cython, a compile error) the build
warns and the package installs without it; the ``cython`` backend then reports why it is
missing (``fastxent._backends.cython_.why_unavailable()``).

Environment variables read at build time:

* ``FASTXENT_BOUNDSCHECK=1``: Cython bounds/wraparound checks and C asserts on (debugging).
* ``FASTXENT_NATIVE=1``: compile for the build machine (``-march=native``); the result may
  not run on other CPUs. Default: portable x86-64 baseline plus an AVX2+FMA copy of the row
  kernels chosen at import time (``__builtin_cpu_supports``).
* ``FASTXENT_NO_OPENMP=1``: skip the OpenMP probe and build a serial extension.
* ``FASTXENT_REQUIRE_EXTENSION=1``: make a failed extension build an error (for CI).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
EXT_DIR = os.path.join("src", "fastxent", "_backends", "_cython")
EXT_NAME = "fastxent._backends._cython._kernels"


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


BOUNDSCHECK = _env_flag("FASTXENT_BOUNDSCHECK")
NATIVE = _env_flag("FASTXENT_NATIVE")

#: The one table of Cython compiler directives.
CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": BOUNDSCHECK,     # FASTXENT_BOUNDSCHECK=1 turns checks back on
    "wraparound": BOUNDSCHECK,
    "initializedcheck": BOUNDSCHECK,
    "cdivision": not BOUNDSCHECK,
    "nonecheck": BOUNDSCHECK,
    "embedsignature": True,
    "binding": False,               # plain builtin functions: the cheapest calls
    "freethreading_compatible": False,
}

# Optimisation flags for gcc/clang. No -ffast-math (it assumes no inf/NaN: breaks the exact
# -inf masking and NaN propagation); -fno-math-errno lets libm calls be inlined/cheaper and
# -ffp-contract=fast allows FMA contraction in the AVX2+FMA variant. -fno-trapping-math
# changes no result (it only lets the compiler ignore floating-point exception *flags*,
# which nothing here reads); without it gcc will not if-convert the NaN-preserving clamps
# `x < lo ? lo : x` of the vectorised exp, and no loop containing exp vectorises.
UNIX_FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=fast", "-fno-trapping-math",
              "-fno-strict-aliasing"]
MSVC_FLAGS = ["/O2", "/fp:precise"]


#: Why the compiled kernels were skipped, kept with the package: pip hides a successful
#: build's output, so ``python -m fastxent info`` (cython_.why_unavailable) reads the cause
#: from here.
BUILD_STATUS = os.path.join(HERE, "src", "fastxent", "_data", "build_status.json")


def _record(skipped_because=None):
    import json
    os.makedirs(os.path.dirname(BUILD_STATUS), exist_ok=True)
    with open(BUILD_STATUS, "w") as f:
        json.dump({"cython_skipped": skipped_because}, f)


def _warn(msg, skipped=True):
    bar = "*" * 78
    sys.stderr.write(f"\n{bar}\nfastxent: {msg}\n{bar}\n\n")
    warnings.warn(f"fastxent: {msg}")
    if skipped:
        _record(msg)


# ----------------------------------------------------------------------- OpenMP probe
# As scikit-learn's sklearn/_build_utils/openmp_helpers.py: compile, link and *run* a tiny
# OpenMP program with the compiler that will build the extension.

OPENMP_TEST = textwrap.dedent("""\
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel num_threads(2) reduction(+:n)
        n += 1;
        printf("%d %d\\n", n, omp_get_max_threads() > 0);
        return 0;
    }
    """)


def openmp_flags(compiler):
    """(compile_args, link_args) for OpenMP with this compiler, or None if it does not work."""
    ctype = compiler.compiler_type
    if ctype == "msvc":
        cflags, lflags = ["/openmp"], []
    elif sys.platform == "darwin":
        cflags, lflags = ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    else:
        cflags, lflags = ["-fopenmp"], ["-fopenmp"]
    extra_c = os.environ.get("CFLAGS", "").split()
    extra_l = os.environ.get("LDFLAGS", "").split()
    tmp = tempfile.mkdtemp(prefix="fastxent_omp_")
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        with open("omp_probe.c", "w") as f:
            f.write(OPENMP_TEST)
        objs = compiler.compile(["omp_probe.c"], output_dir="objects",
                                extra_postargs=cflags + extra_c)
        exe = "omp_probe" + (sysconfig.get_config_var("EXE") or "")
        compiler.link_executable(objs, "omp_probe", extra_postargs=lflags + extra_l)
        out = subprocess.check_output([os.path.join(".", exe)], timeout=60).decode().split()
        ok = out[:2] == ["2", "1"]
    except Exception as exc:  # any failure means: no usable OpenMP
        sys.stderr.write(f"fastxent: OpenMP probe failed: {exc!r}\n")
        ok = False
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)
    return (cflags, lflags) if ok else None


class OptionalBuildExt(build_ext):
    """build_ext that probes OpenMP, sets per-compiler flags, and never fails the install."""

    def build_extensions(self):
        from distutils.sysconfig import customize_compiler  # setuptools' vendored copy

        customize_compiler(self.compiler)
        ctype = self.compiler.compiler_type
        omp = None if _env_flag("FASTXENT_NO_OPENMP") else openmp_flags(self.compiler)
        if omp is None:
            _warn("no working OpenMP found (or FASTXENT_NO_OPENMP set): building the cython "
                  "backend serial; n_threads will be ignored.", skipped=False)
        for ext in self.extensions:
            if ctype == "msvc":
                cflags = list(MSVC_FLAGS)
            else:
                cflags = list(UNIX_FLAGS)
                if NATIVE:
                    cflags.append("-march=native")
                if omp is None:
                    cflags.append("-fopenmp-simd")  # honour `#pragma omp simd` anyway
            if omp is not None:
                cflags += omp[0]
                ext.extra_link_args = list(ext.extra_link_args or []) + omp[1]
            ext.extra_compile_args = list(ext.extra_compile_args or []) + cflags
            shown = " ".join(cflags)
            directives = ",".join(f"{k}={v}" for k, v in CYTHON_DIRECTIVES.items())
            ext.define_macros = list(ext.define_macros or []) + [
                ("FXE_BUILD_FLAGS", f'"{shown}"'),
                ("FXE_BUILD_DIRECTIVES", f'"{directives}"'),
            ]
        super().build_extensions()

    def run(self):
        try:
            super().run()
        except Exception as exc:
            self._failed(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc):
        if _env_flag("FASTXENT_REQUIRE_EXTENSION"):
            raise exc
        _warn(f"could not build the compiled kernels ({type(exc).__name__}: {exc}). "
              "fastxent is installed without the 'cython' backend (the NumPy and Numba "
              "backends still work). To get it, install a C compiler and reinstall: "
              "pip install --force-reinstall --no-binary fastxent fastxent")


def _load(path, name):
    """A module of the source tree, imported by path (the package itself is not built yet)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate():
    """Write the generated sources: the shared maths constants and the compiled tiers (C),
    and the Numba kernels' launch loops."""
    backends = os.path.join("src", "fastxent", "_backends")
    mathdef = _load(os.path.join(backends, "_mathdef.py"), "_fx_mathdef")
    variants = _load(os.path.join(EXT_DIR, "_variants.py"), "_fx_variants")
    numba_gen = _load(os.path.join(backends, "_numba_gen.py"), "_fx_numba_gen")
    for name, text in ((os.path.join(EXT_DIR, "fxe_consts.h"), mathdef.c_header()),
                       (os.path.join(EXT_DIR, "fxe_variants.h"), variants.c_source()),
                       (os.path.join(backends, "_numba_loops.py"), numba_gen.source())):
        path = os.path.join(HERE, name)
        old = open(path).read() if os.path.exists(path) else None
        if old != text:  # unchanged files keep their time stamp (no needless rebuild)
            with open(path, "w") as f:
                f.write(text)


def extensions():
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if BOUNDSCHECK:
        macros.append(("FXE_DEBUG", "1"))
    else:
        macros.append(("NDEBUG", "1"))
    if NATIVE:
        macros.append(("FXE_NATIVE", "1"))
    pyx = os.path.join(EXT_DIR, "_kernels.pyx")
    try:
        import numpy
    except ImportError:
        _warn("numpy is not importable at build time: skipping the compiled kernels.")
        return []
    include_dirs = [numpy.get_include(), EXT_DIR]
    ext = Extension(EXT_NAME, [pyx], include_dirs=include_dirs, define_macros=macros,
                    depends=[os.path.join(EXT_DIR, h) for h in
                             ("fxe_kernels.h", "fxe_rows.h", "fxe_math.h", "fxe_params.h",
                              "fxe_runner.h", "fxe_consts.h", "fxe_variants.h")])
    try:
        from Cython.Build import cythonize
    except ImportError:
        generated = pyx[:-4] + ".c"
        if os.path.exists(generated):  # an sdist with the generated C: no Cython needed
            ext.sources = [generated]
            return [ext]
        _warn("Cython is not installed: skipping the compiled kernels "
              "(pip install cython, then reinstall fastxent).")
        return []
    try:
        return cythonize([ext], compiler_directives=CYTHON_DIRECTIVES, quiet=True,
                         compile_time_env={})
    except Exception as exc:
        _warn(f"cythonize failed ({exc}); installing without the compiled kernels.")
        return []


generate()  # before setuptools collects the package: _numba_loops.py is part of it
_record(None)  # an extension that fails later (extensions(), build_ext) records why
setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
