"""A full disk injected into the project's commands, for tests/test_disk_full.py.

Python imports this module at start-up when its folder is on PYTHONPATH. With
``CTSL_FAULT_ROOT`` set, each file opened for writing under that folder (``open``,
``os.open``, ``torch.save``) is traced to ``CTSL_FAULT_TRACE`` as one line: its kind, the path
under the root with numbers, timestamps and temporary names generalised. With
``CTSL_FAULT_KIND`` set, the first write of that kind in any process (a marker file next to the
trace decides) fails as on a full disk: half of what is written lands, then ENOSPC, or
torch.save's RuntimeError with the disk then reported full.
"""

import builtins
import errno
import io
import os
import re
import shutil

ROOT = os.environ.get("CTSL_FAULT_ROOT")
TRACE = os.environ.get("CTSL_FAULT_TRACE")
KIND = os.environ.get("CTSL_FAULT_KIND")


def kind_of(path):
    """The kind of a written file: its path under the root, generalised."""
    relative = os.path.relpath(os.path.abspath(os.fsdecode(path)), ROOT)
    parts = []
    for part in relative.split(os.sep):
        # Temporary names: a checkpoint being saved or deleted, an atomic write, an export.
        part = re.sub(r"^\.staging\+|^\.deleting\+", "", part)
        part = re.sub(r"^\.(.+)\.\d+\.(tmp|partial|old)$", r"\1", part)
        parts.append(re.sub(r"\d+", "#", part))
    return "/".join(parts)


def _under_root(path):
    try:
        target = os.path.abspath(os.fsdecode(path))
    except TypeError:  # a file descriptor
        return False
    return target == ROOT or target.startswith(ROOT + os.sep)


def _fires(path):
    """Traces a write; whether it is the one that finds the disk full."""
    kind = kind_of(path)
    with _real_open(TRACE, "a") as fout:
        fout.write(kind + "\n")
    if kind != KIND:
        return False
    try:  # the first write of the kind, across processes
        os.close(
            _real_os_open(
                TRACE + ".fired", os.O_CREAT | os.O_EXCL | os.O_WRONLY
            )
        )
    except FileExistsError:
        return False
    global _full
    _full = True
    return True


def _enospc(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fsdecode(path))


class _FullFile:
    """A file whose first write lands half, then finds the disk full."""

    def __init__(self, file, path):
        self._file, self._path = file, path

    def write(self, data):
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        raise _enospc(self._path)

    def writelines(self, lines):
        self.write(type(lines[0])().join(lines) if lines else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __getattr__(self, name):
        return getattr(self._file, name)


def _open(file, mode="r", *args, **kwargs):
    handle = _real_open(file, mode, *args, **kwargs)
    if (
        any(flag in mode for flag in "wax+")
        and _under_root(file)
        and _fires(file)
    ):
        return _FullFile(handle, file)
    return handle


def _os_open(path, flags, *args, **kwargs):
    writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    if writing and _under_root(path) and _fires(path):
        raise _enospc(path)
    return _real_os_open(path, flags, *args, **kwargs)


def _disk_usage(path):
    usage = _real_disk_usage(path)
    if _full and _under_root(path):
        return usage._replace(free=0)
    return usage


class _TorchSaveHook:
    """torch.save, failing as PyTorch's writer does on a full disk."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch.serialization":
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = spec.loader
        real_exec = loader.exec_module

        def exec_module(module):
            real_exec(module)
            real_save = module.save

            def save(obj, f, *args, **kwargs):
                if (
                    isinstance(f, str | os.PathLike)
                    and _under_root(f)
                    and _fires(f)
                ):
                    buffer = io.BytesIO()
                    real_save(obj, buffer, *args, **kwargs)
                    with _real_open(f, "wb") as fout:
                        fout.write(buffer.getvalue()[: buffer.tell() // 2])
                    raise RuntimeError(
                        "[enforce fail at inline_container.cc:626] . PytorchStreamWriter "
                        "failed writing file data/0: file write failed"
                    )
                return real_save(obj, f, *args, **kwargs)

            module.save = save

        loader.exec_module = exec_module
        return spec


_full = False
if ROOT and TRACE:
    ROOT = os.path.abspath(ROOT)
    _real_open, _real_os_open, _real_disk_usage = (
        builtins.open,
        os.open,
        shutil.disk_usage,
    )
    builtins.open = io.open = _open
    os.open = _os_open
    shutil.disk_usage = _disk_usage
    # shutil's copies go through the files' write methods, not sendfile.
    shutil._USE_CP_SENDFILE = False
    import sys

    sys.meta_path.insert(0, _TorchSaveHook())
