"""Filesystem access beneath a storage root that never follows a symlink.

One module over ~400 lines, on purpose: it is the whole of one security rule (one name per
system call, from its parent's directory fd, never following a symlink), and a reviewer should
be able to check every operation that touches the shared root against that rule in one file.
`Dir` (one class: each operation is a short method) and `Location` (a file below a `Dir`) share
the same private helpers (`_parent`, `_fd_in_use`, `_open_regular`); splitting them would only
spread the rule over files that must be audited together.

A storage root (a shared claim, a node's host directory) is untrusted: other tenants may plant
symlinks anywhere under it, at any time (DESIGN.md "Trust boundary"). So the fetcher never hands a
path below the root to the kernel. Only the root itself is opened by path; every other path is
resolved one component at a time from its parent's directory fd (`O_NOFOLLOW`, `O_DIRECTORY`), and
every operation (open, mkdir, rename, link, unlink, rmdir, symlink, readlink, stat, recursive
delete) acts on a single name relative to its parent's fd.

- A symlink, or a non-directory, met where a directory is needed: `errors.PathConflictError`.
- A symlink (or FIFO, device, ...) where a regular file is opened: `errors.PathConflictError`.
- A malformed relative path ("", ".", "..", absolute, NUL, too long or too deep):
  `errors.InvalidSpecError`.
- Once a `Dir` is open, swapping its path for a symlink changes nothing for us: operations through
  the fd keep landing in the real directory (still inside the root's filesystem).

A leaf that is itself a symlink is never followed either: `unlink`/`rmtree` remove the link,
`lstat`/`readlink` describe it, `open` refuses it.

```
with Dir.open_root(Path("/data")) as root, root.open_dir("a/b", create=True) as d:
    with (d / "c/file.bin").open("wb") as fh: ...      # `Dir / rel` is a `Location`
    d.rename("tmp", d, "final")
```
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import threading
from collections.abc import Collection, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal, overload

from modeldepot import errors

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_DEPTH = 64
DIR_MODE = 0o777  # before the umask, like `mkdir`
FILE_MODE = 0o666

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

BinaryMode = Literal["rb", "wb", "r+b", "xb"]
TextMode = Literal["r", "w", "x"]
_FLAGS = {
    "r": os.O_RDONLY,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "r+": os.O_RDWR,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
}


def split(rel: str | PurePosixPath) -> tuple[str, ...]:
    """The components of a relative path, validated (`InvalidSpecError` when malformed)."""
    text = str(rel)
    if "\0" in text:
        raise errors.InvalidSpecError(f"path {text!r} contains a NUL byte")
    if len(text.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise errors.InvalidSpecError(f"path {text[:80]!r}... is longer than {MAX_PATH_BYTES} bytes")
    if text.startswith("/"):
        raise errors.InvalidSpecError(f"path {text!r} is absolute; a relative path is needed")
    parts = tuple(text.split("/"))
    if len(parts) > MAX_DEPTH:
        raise errors.InvalidSpecError(f"path {text[:80]!r}... is deeper than {MAX_DEPTH} components")
    for name in parts:
        check_name(name, text)
    return parts


def check_name(name: str, context: str = "") -> str:
    """One directory entry name: not "", ".", "..", no "/" or NUL, at most 255 bytes."""
    where = f" in {context!r}" if context and context != name else ""
    if name in ("", ".", ".."):
        raise errors.InvalidSpecError(f"invalid path component {name!r}{where}")
    if "/" in name or "\0" in name:
        raise errors.InvalidSpecError(f"invalid path component {name!r}{where}")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise errors.InvalidSpecError(f"path component {name[:40]!r}...{where} is longer than 255 bytes")
    return name


def _symlink_conflict(path: str) -> errors.PathConflictError:
    return errors.PathConflictError(f"{path} is a symlink; refusing to follow it")


class Dir:
    """An open directory below (or at) a storage root, and the path it was reached by.

    `path` is for messages only; every operation goes through the fd. Relative paths given to the
    methods are resolved beneath this directory without following symlinks. Safe to share between
    threads; `close()` waits for no one but defers the actual close until running calls are done,
    so a late call can never act on a reused fd number.
    """

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self.path = path
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False

    # -- lifetime -------------------------------------------------------------------------------

    @classmethod
    def open_root(cls, path: Path, *, create: bool = False) -> Dir:
        """Open a storage root by path (trusted: it is the mount point the admin chose)."""
        if create:
            os.makedirs(path, exist_ok=True)
        return cls(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), str(path))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._users:
                return  # the last running call closes it
        os.close(self._fd)

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _fd_in_use(self) -> Iterator[int]:
        with self._lock:
            if self._closed:
                raise ValueError(f"{self.path}: directory handle is closed")
            self._users += 1
        try:
            yield self._fd
        finally:
            with self._lock:
                self._users -= 1
                last = self._closed and self._users == 0
            if last:
                os.close(self._fd)

    def fileno(self) -> int:
        return self._fd

    def _sub(self, rel: str) -> str:
        return f"{self.path.rstrip('/')}/{rel}"

    def __truediv__(self, rel: str) -> Location:
        return Location(self, rel)

    # -- resolution -----------------------------------------------------------------------------

    def open_dir(self, rel: str | PurePosixPath, *, create: bool = False, mode: int = DIR_MODE) -> Dir:
        """Open the directory `rel` (creating missing ones with `create`), never following a symlink."""
        parts = split(rel)
        current = self
        try:
            for i, name in enumerate(parts):
                nxt = current._open_child_dir(name, self._sub("/".join(parts[: i + 1])), create, mode)
                if current is not self:
                    current.close()
                current = nxt
        except BaseException:
            if current is not self:
                current.close()
            raise
        if current is self:  # unreachable: split() never returns no components
            raise errors.InvalidSpecError(f"empty path below {self.path}")
        return current

    def _open_child_dir(self, name: str, path: str, create: bool, mode: int) -> Dir:
        with self._fd_in_use() as fd:
            for _ in range(3):
                try:
                    return Dir(os.open(name, _DIR_FLAGS, dir_fd=fd), path)
                except FileNotFoundError:
                    if not create:
                        raise
                except OSError as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                        raise self._not_a_dir(fd, name, path) from None
                    raise
                with contextlib.suppress(FileExistsError):  # lost a race: open what is there
                    os.mkdir(name, mode, dir_fd=fd)
        raise errors.PathConflictError(f"{path} keeps changing while it is being created")

    @staticmethod
    def _not_a_dir(fd: int, name: str, path: str) -> errors.PathConflictError:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return errors.PathConflictError(f"{path} is not a directory")
        if stat.S_ISLNK(st.st_mode):
            return _symlink_conflict(path)
        return errors.PathConflictError(f"{path} is not a directory")

    @contextlib.contextmanager
    def _parent(self, rel: str | PurePosixPath, *, create: bool = False) -> Iterator[tuple[Dir, str]]:
        """(directory holding the last component, that component's name)."""
        parts = split(rel)
        if len(parts) == 1:
            yield self, parts[0]
            return
        with self.open_dir("/".join(parts[:-1]), create=create) as parent:
            yield parent, parts[-1]

    # -- files ----------------------------------------------------------------------------------

    def open_fd(self, rel: str | PurePosixPath, flags: int, mode: int = FILE_MODE) -> int:
        """`os.open` of a regular file (never a symlink, FIFO or device); the caller closes the fd.

        Opening for writing refuses a file with other hard links unless it is truncated anyway
        (then the name is replaced by a new file): we never modify an inode someone else shares.
        """
        with self._parent(rel) as (parent, name), parent._fd_in_use() as dfd:
            path = parent._sub(name)
            if not flags & (os.O_WRONLY | os.O_RDWR):
                return _open_regular(dfd, name, flags, mode, path)
            truncate = bool(flags & os.O_TRUNC)
            flags &= ~os.O_TRUNC  # only once we know the inode is ours alone
            fd = _open_regular(dfd, name, flags, mode, path)
            try:
                if os.fstat(fd).st_nlink > 1:
                    if not truncate:
                        raise errors.PathConflictError(
                            f"{path} has other hard links; refusing to modify it in place"
                        )
                    os.close(fd)
                    fd = -1
                    os.unlink(name, dir_fd=dfd)
                    fd = _open_regular(dfd, name, flags | os.O_CREAT | os.O_EXCL, mode, path)
                elif truncate:
                    os.ftruncate(fd, 0)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                raise
            return fd

    @overload
    def open(self, rel: str, mode: BinaryMode, buffering: int = -1, encoding: None = None) -> IO[bytes]: ...
    @overload
    def open(
        self, rel: str, mode: TextMode = "r", buffering: int = -1, encoding: str | None = "utf-8"
    ) -> IO[str]: ...
    def open(self, rel: str, mode: str = "r", buffering: int = -1, encoding: str | None = None) -> IO[Any]:
        """Like `open()` for a file below this directory ("r", "w", "r+", "x", with or without "b")."""
        return self._open(rel, mode, buffering, encoding)

    def _open(self, rel: str, mode: str, buffering: int, encoding: str | None) -> IO[Any]:
        base = mode.replace("b", "")
        if base not in _FLAGS:
            raise ValueError(f"unsupported mode {mode!r}")
        fd = self.open_fd(rel, _FLAGS[base])
        try:
            if "b" in mode:
                return os.fdopen(fd, mode, buffering)
            return os.fdopen(fd, mode, buffering, encoding=encoding or "utf-8")
        except BaseException:
            os.close(fd)
            raise

    def read_bytes(self, rel: str) -> bytes:
        with self.open(rel, "rb") as fh:
            return fh.read()

    def write_atomic(self, rel: str, data: bytes, *, fsync: bool = False) -> None:
        """Write `data` to a temp file next to `rel` and rename it over `rel`."""
        with self._parent(rel) as (parent, name):
            tmp = f".{name}.tmp-{os.getpid()}-{threading.get_ident()}"
            parent.unlink(tmp, missing_ok=True)
            with parent.open(tmp, "xb") as fh:
                fh.write(data)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            parent.rename(tmp, parent, name)

    # -- entries --------------------------------------------------------------------------------

    def lstat(self, rel: str | PurePosixPath) -> os.stat_result:
        """Status of the entry itself (a symlink is described, not followed)."""
        with self._parent(rel) as (parent, name), parent._fd_in_use() as fd:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)

    def exists(self, rel: str | PurePosixPath) -> bool:
        """Whether the entry exists (a symlink counts; a symlinked parent is a `PathConflictError`)."""
        try:
            self.lstat(rel)
        except FileNotFoundError:
            return False
        return True

    def scandir(self) -> list[os.DirEntry[str]]:
        """Entries of this directory (their `is_dir()` etc. must be asked with follow_symlinks=False)."""
        with self._fd_in_use() as fd:
            # A fresh open file description: scandir(fd) would share (and rewind) our fd's offset.
            own = os.open(".", _DIR_FLAGS, dir_fd=fd)
            try:
                with os.scandir(own) as it:
                    return list(it)
            finally:
                os.close(own)

    def listdir(self) -> list[str]:
        return [e.name for e in self.scandir()]

    def mkdir(self, rel: str | PurePosixPath, mode: int = DIR_MODE) -> None:
        """Create `rel` and missing parents (no error if it is already a directory)."""
        self.open_dir(rel, create=True, mode=mode).close()

    def unlink(self, rel: str | PurePosixPath, *, missing_ok: bool = False) -> None:
        """Remove a file or symlink (a symlink itself, never what it points to)."""
        try:
            with self._parent(rel) as (parent, name), parent._fd_in_use() as fd:
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmdir(self, rel: str | PurePosixPath, *, missing_ok: bool = False) -> None:
        try:
            with self._parent(rel) as (parent, name), parent._fd_in_use() as fd:
                os.rmdir(name, dir_fd=fd)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self, rel: str | PurePosixPath, *, missing_ok: bool = True) -> None:
        """Remove the entry `rel` whatever it is; directories recursively, without following symlinks.

        A symlink (at `rel` or anywhere inside) is unlinked, never followed (`shutil.rmtree` with
        `dir_fd` walks by fd and checks every directory it enters).
        """
        try:
            with self._parent(rel) as (parent, name), parent._fd_in_use() as fd:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=fd)
                else:
                    os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rename(self, src: str | PurePosixPath, dst_dir: Dir, dst: str | PurePosixPath) -> None:
        """Atomically rename `src` (below this directory) to `dst` below `dst_dir` (replacing it)."""
        with (
            self._parent(src) as (sp, sname),
            dst_dir._parent(dst) as (dp, dname),
            sp._fd_in_use() as sfd,
            dp._fd_in_use() as dfd,
        ):
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)

    def link(self, src: str | PurePosixPath, dst_dir: Dir, dst: str | PurePosixPath) -> None:
        """Hard-link the file `src` (a symlink is linked as itself, never followed) as `dst`."""
        with (
            self._parent(src) as (sp, sname),
            dst_dir._parent(dst) as (dp, dname),
            sp._fd_in_use() as sfd,
            dp._fd_in_use() as dfd,
        ):
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)

    def symlink(self, value: str, rel: str | PurePosixPath) -> None:
        """Create the symlink `rel` -> `value` (the value is stored, not resolved)."""
        with self._parent(rel) as (parent, name), parent._fd_in_use() as fd:
            os.symlink(value, name, dir_fd=fd)

    def readlink(self, rel: str | PurePosixPath) -> str:
        with self._parent(rel) as (parent, name), parent._fd_in_use() as fd:
            return os.readlink(name, dir_fd=fd)

    def fsync(self) -> None:
        """Make this directory's entries durable."""
        with self._fd_in_use() as fd:
            os.fsync(fd)

    def fstat(self) -> os.stat_result:
        with self._fd_in_use() as fd:
            return os.fstat(fd)

    def walk_dirs(self, *, skip: Collection[str] = ()) -> Iterator[tuple[str, Dir]]:
        """This directory ("") and every directory below it, except the top-level names in `skip`.

        Symlinks are not followed (a symlink to a directory is not a directory here).
        """
        yield "", self
        for entry in self.scandir():
            if entry.is_dir(follow_symlinks=False) and entry.name not in skip:
                with contextlib.suppress(FileNotFoundError), self.open_dir(entry.name) as sub:
                    for rel, d in sub.walk_dirs():
                        yield (f"{entry.name}/{rel}" if rel else entry.name), d

    @contextlib.contextmanager
    def flock(self, rel: str) -> Iterator[None]:
        """Hold an exclusive `flock` on the file `rel` (created if missing)."""
        fd = self.open_fd(rel, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _open_regular(dir_fd: int, name: str, flags: int, mode: int, path: str) -> int:
    """Open `name` below `dir_fd` with O_NOFOLLOW; refuse anything but a regular file.

    O_NONBLOCK keeps a planted FIFO from blocking the open; it is cleared again for a regular file.
    """
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _symlink_conflict(path) from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):
            raise errors.PathConflictError(f"{path} is not a regular file") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise errors.PathConflictError(f"{path} is not a regular file")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Location:
    """A file below an open `Dir`, with the small `Path`-like API the transfer needs.

    Every call re-resolves `rel` beneath the directory without following symlinks.
    """

    def __init__(self, base: Dir, rel: str) -> None:
        split(rel)
        self.base = base
        self.rel = rel

    def __str__(self) -> str:
        return self.base._sub(self.rel)

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    @overload
    def open(self, mode: BinaryMode, buffering: int = -1, encoding: None = None) -> IO[bytes]: ...
    @overload
    def open(self, mode: TextMode = "r", buffering: int = -1, encoding: str | None = "utf-8") -> IO[str]: ...
    def open(self, mode: str = "r", buffering: int = -1, encoding: str | None = None) -> IO[Any]:
        return self.base._open(self.rel, mode, buffering, encoding)

    def stat(self) -> os.stat_result:
        """lstat: a symlink is described, not followed (opening it is refused)."""
        return self.base.lstat(self.rel)

    def exists(self) -> bool:
        return self.base.exists(self.rel)

    def unlink(self, missing_ok: bool = False) -> None:
        self.base.unlink(self.rel, missing_ok=missing_ok)

    def make_parents(self) -> None:
        """Create the directories above this file, as needed."""
        parent = PurePosixPath(self.rel).parent
        if str(parent) != ".":
            self.base.mkdir(parent)

    def read_bytes(self) -> bytes:
        return self.base.read_bytes(self.rel)

    def fsync(self) -> None:
        fd = self.base.open_fd(self.rel, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
