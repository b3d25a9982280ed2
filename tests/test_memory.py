"""The command line's allocator setting (edgefuse._memory): freed large tensors stay in the process."""

import ctypes
import os
import subprocess
import sys

import pytest

_PROBE = r"""
import ctypes, sys
from edgefuse._memory import keep_freed_memory
took = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = Info
import torch
t = torch.empty(64 << 20, dtype=torch.uint8)
t.fill_(1)
mapped = libc.mallinfo2().hblkhd  # bytes in blocks of their own mmap
del t
print(took, mapped, libc.mallinfo2().fordblks)  # fordblks: free bytes kept in the heap
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


def _probe(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    clean.pop("EDGEFUSE_SYSTEM_MALLOC", None)
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env={**clean, **env})
    assert r.returncode == 0, r.stderr
    took, mapped, free = r.stdout.split()
    return took == "True", int(mapped), int(free)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's malloc only")
def test_a_freed_large_tensor_stays_in_the_heap():
    took, mapped, free = _probe()
    assert took
    assert mapped < 64 << 20 and free >= 64 << 20  # served from the heap, kept there after the free


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's malloc only")
@pytest.mark.parametrize("env", [{"EDGEFUSE_SYSTEM_MALLOC": "1"}, {"MALLOC_ARENA_MAX": "2"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.check=0"}])
def test_the_users_own_allocator_setting_is_left_alone(env):
    took, mapped, free = _probe(**env)
    assert not took
    assert mapped >= 64 << 20 and free < 64 << 20  # glibc's default: its own mmap, returned on free


def test_the_command_line_sets_it_and_main_called_in_a_process_does_not():
    probe = ("import sys, edgefuse._memory as m\n"
             "m.keep_freed_memory = lambda: print('kept') or True\n"
             "from edgefuse.cli.main import main\n"
             "try:\n    main(['list'])\nexcept SystemExit:\n    print('returned')\n"
             "sys.argv = ['edgefuse', 'list']\n"
             "main()\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln in ("kept", "returned")]
    assert lines == ["returned", "kept"]  # main(argv) leaves the allocator alone, the console script sets it


def test_not_set_by_importing_the_library():
    r = subprocess.run([sys.executable, "-c", "import edgefuse, edgefuse.api, edgefuse.quantize; "
                        "import sys; print('edgefuse._memory' in sys.modules)"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
