"""The hook's per-step check in one C++ call: is everything the decay was derived from as it was?

Why. At every step syre's hook must see what the user changed since the last one (a group or a
parameter added or replaced, ``requires_grad`` toggled, the model cast or moved, a gradient set to
None, a parameter's storage replaced) before it writes to the parameters. In Python that is five torch
attribute reads per parameter, about 70 ns each in a warm loop and twice that right after the
optimizer's own step: 25-40 us at 24 tensors, more than the decay's kernels. ``Steady.same`` reads the
same facts from the tensors themselves (``THPVariable_Unpack``) in one call of about half a
microsecond, and the native batches then run without reading their pointers again.

Build. C++ against torch's own headers and libraries, with the system C++ compiler (``$CXX``, else
``c++``, ``g++`` or ``clang++``), about 15 s once per machine, cached beside the native kernels
(``syre.kernels._native``) under a name hashed from the source, the compiler, the flags, torch's build
and Python's ABI. It builds in a background thread the first time a hook asks (``lib()``), so no step
waits for it; until it is loaded, and wherever it cannot be built, the hook checks in Python: the same
facts, the same decisions, the same values, only slower. ``lib(wait=True)`` builds and waits.

Off. ``SYRE_NATIVE=0`` (with the native kernels); a failed build turns it off for the process with one
warning.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import warnings
from typing import Dict, List, Optional

import torch

from . import _native
from .functional import apply_buckets as _apply_buckets

__all__ = ["SOURCE", "Steady", "disable_reason", "lib"]

SOURCE = r"""
#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>
#include <cstdint>

static PyObject* s_params;

static int64_t code_of(const at::Tensor& t) {
  // requires_grad, dtype, device type and index: what syre's plan is derived from (with the Python type)
  return (int64_t)t.requires_grad() | ((int64_t)t.scalar_type() << 1) | ((int64_t)t.device().type() << 9)
         | ((int64_t)(uint8_t)t.device().index() << 17);
}

/* codes(flat, out): the code of each tensor of the tuple ``flat`` into the int64 array at ``out``; 0, or 1
   where one is not a tensor. */
static PyObject* codes(PyObject*, PyObject* args) {
  PyObject* flat; unsigned long long out_addr;
  if (!PyArg_ParseTuple(args, "O!K", &PyTuple_Type, &flat, &out_addr)) return NULL;
  int64_t* out = (int64_t*)(uintptr_t)out_addr;
  try {
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(flat); k++) {
      PyObject* p = PyTuple_GET_ITEM(flat, k);
      if (!THPVariable_Check(p)) return PyLong_FromLong(1);
      out[k] = code_of(THPVariable_Unpack(p));
    }
  } catch (...) {
    return PyLong_FromLong(1);
  }
  return PyLong_FromLong(0);
}

/* same(groups, group_refs, flat, types, sizes, codes, decayed, ptrs) -> 0 as it was; 1 the groups, a
   parameter, its Python type, requires_grad, dtype or device changed; 2 a decayed parameter has no
   gradient; 3 a decayed parameter's storage moved. ``sizes``: int64 per group; ``codes``: int64 per
   parameter of ``flat``; ``decayed``: (index into flat, pointer) int64 pairs, pointer -1 where the decay holds
   the tensor itself rather than its address (torch's multi-tensor calls). Reads only. */
static PyObject* same(PyObject*, PyObject* args) {
  PyObject *groups, *group_refs, *flat, *types;
  unsigned long long sizes_addr, codes_addr, decayed_addr; Py_ssize_t n_decayed;
  if (!PyArg_ParseTuple(args, "OO!O!O!KKKn", &groups, &PyTuple_Type, &group_refs, &PyTuple_Type, &flat,
                        &PyTuple_Type, &types, &sizes_addr, &codes_addr, &decayed_addr, &n_decayed)) return NULL;
  const int64_t* sizes = (const int64_t*)(uintptr_t)sizes_addr;
  const int64_t* want = (const int64_t*)(uintptr_t)codes_addr;
  const int64_t* decayed = (const int64_t*)(uintptr_t)decayed_addr;
  Py_ssize_t n_groups = PyTuple_GET_SIZE(group_refs), n_flat = PyTuple_GET_SIZE(flat), k = 0;
  if (!PyList_CheckExact(groups) || PyList_GET_SIZE(groups) != n_groups) return PyLong_FromLong(1);
  try {
    for (Py_ssize_t g = 0; g < n_groups; g++) {
      PyObject* group = PyList_GET_ITEM(groups, g);
      if (group != PyTuple_GET_ITEM(group_refs, g) || !PyDict_CheckExact(group)) return PyLong_FromLong(1);
      PyObject* params = PyDict_GetItemWithError(group, s_params);
      if (params == NULL) {
        if (PyErr_Occurred()) return NULL;
        return PyLong_FromLong(1);
      }
      if (!PyList_CheckExact(params) || PyList_GET_SIZE(params) != sizes[g]) return PyLong_FromLong(1);
      for (Py_ssize_t i = 0; i < sizes[g]; i++, k++) {
        PyObject* p = PyList_GET_ITEM(params, i);
        if (k >= n_flat || p != PyTuple_GET_ITEM(flat, k) || (PyObject*)Py_TYPE(p) != PyTuple_GET_ITEM(types, k)
            || !THPVariable_Check(p) || code_of(THPVariable_Unpack(p)) != want[k])
          return PyLong_FromLong(1);
      }
    }
    if (k != n_flat) return PyLong_FromLong(1);
    for (Py_ssize_t j = 0; j < n_decayed; j++) {
      const at::Tensor& t = THPVariable_Unpack(PyTuple_GET_ITEM(flat, decayed[2 * j]));
      if (!t.grad().defined()) return PyLong_FromLong(2);
      if (decayed[2 * j + 1] != -1 && (int64_t)(uintptr_t)t.data_ptr() != decayed[2 * j + 1]) return PyLong_FromLong(3);
    }
  } catch (...) {
    return PyLong_FromLong(1);
  }
  return PyLong_FromLong(0);
}

static PyObject* version(PyObject*, PyObject*) { return PyLong_FromLong(1); }

static PyMethodDef methods[] = {
  {"codes", codes, METH_VARARGS, "codes(flat, out)"},
  {"same", same, METH_VARARGS, "same(groups, group_refs, flat, types, sizes, codes, decayed, n_decayed)"},
  {"abi", version, METH_NOARGS, "the interface version"},
  {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "syre_scan", NULL, -1, methods};
PyMODINIT_FUNC PyInit_syre_scan(void) {
  s_params = PyUnicode_InternFromString("params");
  return PyModule_Create(&module);
}
"""

_STD = ("-std=c++20", "-std=c++17")
_lock = threading.Lock()
_state: dict = {}  # "lib": the module or None; "reason": why not; "thread": the build under way


def _compiler() -> Optional[str]:
    for cand in (os.environ.get("CXX", "").split(" ")[0], "c++", "g++", "clang++"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _torch_dirs():
    root = os.path.dirname(torch.__file__)
    return [os.path.join(root, "include"), os.path.join(root, "include", "torch", "csrc", "api", "include")], \
        os.path.join(root, "lib")


def _flags(std: str) -> List[str]:
    includes, libdir = _torch_dirs()
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", 1))
    flags = ["-O2", std, "-w", "-shared", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
    flags += [f"-I{d}" for d in includes + [sysconfig.get_paths()["include"]]]
    if sys.platform == "darwin":
        flags += ["-undefined", "dynamic_lookup"]
    else:
        flags += [f"-L{libdir}", "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python", f"-Wl,-rpath,{libdir}"]
    return flags


def _load(path: str):
    spec = importlib.util.spec_from_file_location("syre_scan", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if mod.abi() != 1:
        raise RuntimeError(f"{path} is not this version's module")
    return mod


def _build():
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found ($CXX, c++, g++ or clang++)")
    includes, _ = _torch_dirs()
    if not os.path.exists(os.path.join(includes[0], "torch", "csrc", "autograd", "python_variable.h")):
        raise RuntimeError(f"torch's C++ headers are not installed ({includes[0]})")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    out_dir = _native.build_dir()
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    errors = []
    for std in _STD:
        flags = _flags(std)
        key = hashlib.sha256("\0".join([SOURCE, cxx, version, " ".join(flags), torch.__version__,
                                        str(getattr(torch.version, "git_version", "")), sys.version]).encode()).hexdigest()[:16]
        mod, err = _native.build_cached(os.path.join(out_dir, f"syre_scan_{key}{suffix}"), _load, lambda path, flags=flags: (
            _native.compile_source(SOURCE, path, ".cpp", lambda src, out: [cxx, src, "-o", out, *flags], timeout=600)))
        if err:
            errors.append(f"{std}: {err}")
            continue
        return mod
    raise RuntimeError("the C++ compiler refused the step check: " + "; ".join(errors))


def _run_build() -> None:
    try:
        mod, reason = _build(), None
    except Exception as exc:  # noqa: BLE001 -- any failure means: check in Python
        mod, reason = None, f"{type(exc).__name__}: {exc}"
    with _lock:
        _state.update(lib=mod, reason=reason)
    if reason is not None:
        warnings.warn(f"syre: the hook's C++ step check is off ({reason}); the hook checks in Python (the same "
                      "decisions and values, slower). Set SYRE_NATIVE=0 to skip the attempt.", RuntimeWarning, stacklevel=2)


def lib(wait: bool = False):
    """The loaded module; None while it builds (in a background thread, started by the first call) or where it
    is off. ``wait=True`` waits for the build."""
    got = _state.get("lib", False)
    if got is not False:
        return got
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        if not _native._setting():
            _state.update(lib=None, reason="SYRE_NATIVE=0")
            return None
        thread = _state.get("thread")
        if thread is None:
            thread = _state["thread"] = threading.Thread(target=_run_build, name="syre-scan-build", daemon=True)
            thread.start()
    if wait:
        thread.join()
    return _state.get("lib")


def disable_reason() -> Optional[str]:
    """Why the step check is off (None: on, building, or not tried yet)."""
    return _state.get("reason")


def _int64s(values) -> ctypes.Array:
    return (ctypes.c_int64 * max(len(values), 1))(*values)


class Steady:
    """What a step of the hook checks in one call, and the decay it then runs.

    Built from the optimizer's groups and, per group index, the buckets that decay it (``syre.kernels.functional
    .buckets``, over the parameters themselves; a native batch among them called at least once, so its pointers
    are known); ``same(optimizer)`` is 0 while every group, parameter, its type, ``requires_grad``, dtype and device
    are as they were at the build, every decayed parameter has a gradient, and no storage a native batch writes
    through moved. ``run(gi, weight)`` is then the group's decay, as ``functional.apply_buckets`` would make it,
    with the native batches' pointers not read again. It holds references to the groups and parameters it
    compares (identity is then safe: none of them can be freed and its address reused while it lives).
    """

    def __init__(self, mod, optimizer: torch.optim.Optimizer, buckets: Dict[int, list]):
        groups = optimizer.param_groups
        flat = tuple(p for g in groups for p in g["params"])
        self._mod, self._refs, self._flat, self._types = mod, tuple(groups), flat, tuple(map(type, flat))
        self._sizes = _int64s([len(g["params"]) for g in groups])
        self._codes = _int64s([0] * len(flat))
        if mod.codes(flat, ctypes.addressof(self._codes)) != 0:
            raise ValueError("a parameter is not a tensor")
        where = {id(p): k for k, p in enumerate(flat)}
        pairs: List[int] = []
        self.runs: Dict[int, list] = {}
        for gi, bs in buckets.items():
            runs = self.runs[gi] = []
            for b in bs:
                ps, batch = b[1], (b[4][0] if b[0] == "native" else None)
                if any(id(p) not in where for p in ps):
                    raise ValueError("a bucket tensor that is not a parameter of the groups (a local shard)")
                if batch is not None and batch._seen is None:
                    raise ValueError("a native batch that has not run yet")
                ptrs = batch._seen if batch is not None else [-1] * len(ps)
                pairs += [v for p, ptr in zip(ps, ptrs) for v in (where[id(p)], ptr)]
                runs.append((batch, [b]))
        self._decayed, self._n = _int64s(pairs), len(pairs) // 2
        self._args = (self._refs, flat, self._types, ctypes.addressof(self._sizes), ctypes.addressof(self._codes),
                      ctypes.addressof(self._decayed), self._n)

    def same(self, optimizer: torch.optim.Optimizer) -> int:
        """0: as at the build; else why not (see the C++ ``same``). Reads only."""
        return self._mod.same(optimizer.param_groups, *self._args)

    def run(self, gi: int, weight) -> None:
        """Group ``gi``'s decay by ``weight`` (a float, or a 0-d tensor: then every bucket through
        ``apply_buckets``, which takes tensor weights); ``same`` said 0 at this step."""
        tensor = isinstance(weight, torch.Tensor)
        for batch, bucket in self.runs[gi]:
            if batch is not None and not tensor:
                batch.run(weight)
            else:
                _apply_buckets(bucket, weight)
