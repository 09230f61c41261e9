"""Build the generated C on the host with gcc through cffi and run it.

The module wraps the model's API plus a batch loop; a profile build also snapshots the arena after every op
(through the SIQ_PROFILE hook) so a mismatch can be traced to the first differing op and index.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siq.training.errors import SiqError

from .export import header_macros

STRICT_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Wconversion", "-Wsign-conversion", "-Wshadow",
                "-Wcast-align", "-Werror", "-O2"]

_HARNESS = r"""
#include "{prefix}.h"
#include <string.h>

static uint8_t *snapshots;      /* [ops][arena bytes] when profiling */
static int snapshot_ops;

#ifdef SIQ_PROFILE
void siq_profile_mark(int op_index)
{{
    if (snapshots != NULL && op_index >= 0 && op_index < snapshot_ops) {{
        memcpy(snapshots + (size_t)op_index * {upper}_ARENA_BYTES, {prefix}_arena(), {upper}_ARENA_BYTES);
    }}
}}
#endif

void host_set_snapshots(uint8_t *buffer, int ops)
{{
    snapshots = buffer;
    snapshot_ops = ops;
}}

void host_infer_batch(const uint8_t *images, int count, int32_t *scores, int32_t *classes)
{{
    int i;
    for (i = 0; i < count; ++i) {{
        classes[i] = {prefix}_infer(images + (size_t)i * {upper}_INPUT_BYTES, scores + (size_t)i * {upper}_NUM_CLASSES);
    }}
}}
"""


@dataclass
class HostModel:
    ffi: object
    lib: object
    prefix: str
    input_bytes: int
    num_classes: int
    arena_bytes: int
    profile: bool
    build_dir: Path  # where it was built; already removed when build_host made it a temporary folder

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images [N, C, H, W] -> (int32 scores [N, classes], classes [N])."""
        flat = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8)
        if flat.shape[1] != self.input_bytes:
            raise SiqError(f"images have {flat.shape[1]} bytes, the model expects {self.input_bytes}")
        scores = np.zeros((len(flat), self.num_classes), dtype=np.int32)
        classes = np.zeros(len(flat), dtype=np.int32)
        ffi = self.ffi
        self.lib.host_infer_batch(ffi.from_buffer("uint8_t[]", flat), len(flat),
                                  ffi.from_buffer("int32_t[]", scores), ffi.from_buffer("int32_t[]", classes))
        return scores, classes

    def arena_snapshots(self, image: np.ndarray, n_ops: int) -> tuple[np.ndarray, np.ndarray]:
        """(arena after each op [n_ops, arena bytes], scores) for one image; needs a profile build."""
        if not self.profile:
            raise RuntimeError("arena snapshots need build_host(..., profile=True)")
        snaps = np.zeros((n_ops, max(self.arena_bytes, 1)), dtype=np.uint8)
        self.lib.host_set_snapshots(self.ffi.from_buffer("uint8_t[]", snaps), n_ops)
        try:
            scores, _ = self.infer(image[None])
        finally:
            self.lib.host_set_snapshots(self.ffi.NULL, 0)
        return snaps, scores[0]


def build_host(model_dir: Path, prefix: str, build_dir: Path | None = None, profile: bool = False,
               extra_flags: list[str] | None = None) -> HostModel:
    """Compile <prefix>.c with the strict flags into a cffi extension module and import it. Without build_dir
    the build happens in a temporary folder that is removed once the module is loaded."""
    model_dir = Path(model_dir).resolve()
    header = (model_dir / f"{prefix}.h").read_text()
    constants = header_macros(header, prefix)
    scratch = build_dir is None  # a temporary build is removed once the module is loaded (see below)
    build_dir = Path(build_dir or tempfile.mkdtemp(prefix="siq-host-")).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _build(model_dir, prefix, build_dir, profile, extra_flags, constants)
    finally:
        if scratch:  # the loaded extension stays mapped in this process after its file is gone
            shutil.rmtree(build_dir, ignore_errors=True)


def _build(model_dir: Path, prefix: str, build_dir: Path, profile: bool, extra_flags, constants) -> HostModel:
    import cffi  # only host builds need it, and it pulls in setuptools: imported when one is made
    module = f"_siq_host_{prefix}_{abs(hash((str(model_dir), profile, os.getpid()))) % 10**10}"
    ffi = cffi.FFI()
    ffi.cdef(f"""
        int {prefix}_infer(const uint8_t *image, int32_t *scores);
        void host_infer_batch(const uint8_t *images, int count, int32_t *scores, int32_t *classes);
        void host_set_snapshots(uint8_t *buffer, int ops);
    """)
    defines = ["-DSIQ_PROFILE"] if profile else []
    # The model source gets the strict flags; the small harness above is compiled with the module.
    ffi.set_source(module, _HARNESS.format(prefix=prefix, upper=prefix.upper()),
                   sources=[str(model_dir / f"{prefix}.c")], include_dirs=[str(model_dir)],
                   extra_compile_args=defines + (extra_flags or []))
    _check_strict(model_dir / f"{prefix}.c", model_dir, defines, extra_flags)
    try:
        lib_path = ffi.compile(tmpdir=str(build_dir), verbose=False)
    except Exception as exc:  # noqa: BLE001 - distutils raises several types
        raise SiqError(f"host build of {model_dir / (prefix + '.c')} failed: {str(exc).splitlines()[0][:200]}") from None
    spec = importlib.util.spec_from_file_location(module, lib_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[module] = mod
    return HostModel(mod.ffi, mod.lib, prefix, constants["INPUT_BYTES"], constants["NUM_CLASSES"],
                     constants["ARENA_BYTES"], profile, build_dir)


def _check_strict(source: Path, include: Path, defines: list[str], extra_flags) -> None:
    """gcc -fsyntax-only with every strict warning as an error: the generated C must be warning-free."""
    cmd = ["gcc", *STRICT_FLAGS, *defines, *(extra_flags or []), "-I", str(include), "-fsyntax-only", str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        first = next((l for l in result.stderr.splitlines() if "error" in l), result.stderr.strip()[:200])
        raise SiqError(f"generated C does not compile warning-free: {first}")


