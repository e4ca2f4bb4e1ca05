"""Crash-safe file writes: stage under a unique name in the target's folder, fsync, rename, fsync
the folder.

Every file the toolkit keeps (checkpoints, the checkpoint index, ``metrics.csv``, ``result.log``,
``config.yaml``, validate.py's JSON, exported models, downloaded and converted weights and their hash
records) goes through here, so that:

- a kill at any moment leaves either the old file or the new one under the final name, never a
  partial one;
- two writers of the same file (two runs in one folder, every rank of a job) never delete or
  overwrite each other's staging files: each staging name holds the process id and a random token;
- a failed write or fsync (``EIO``, ``ENOSPC``) raises and keeps the old file: nothing is renamed
  over it;
- new files get the permissions the user's umask asks for (``0o666 & ~umask``);
- a symbolic link is never written through: a link at the final name is replaced by the new file
  (``rename`` replaces the link itself), and staging files are created with ``O_EXCL`` and reopened
  with ``O_NOFOLLOW``.

Staging names are ``.NAME.staging-PID-HOST-TOKEN[SUFFIX]`` (``HOST``: 8 hex digits of the host name's
SHA-256), so that ``remove_leftover_staging`` can tell the files of killed writers from live ones:
a file of this host is a leftover when its process is gone; a file of another host (or a name of an
earlier version, without ``HOST``) when it has not changed for ``LEFTOVER_AGE_S`` (a live writer
appends to it continuously).
"""
import errno
import hashlib
import os
import re
import socket
import stat
import time
import uuid

from .errors import UserError

STAGING_MARK = ".staging-"
LEFTOVER_AGE_S = 3600
_STAGING_NAME = re.compile(r"\..+" + re.escape(STAGING_MARK) + r"(\d+)-(?:([0-9a-f]{8})-)?[0-9a-f]{12}(?:\..*)?")
# what a training run writes: a failed write of one of these is continued with --resume auto
TRAINING_FILES = ("checkpoint", "checkpoint index", "metrics file", "result log")


def host_tag():
    """8 hex digits naming this host in staging names."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def staging_path(path, suffix=""):
    """A unique hidden name beside ``path`` for writing its next version (``suffix`` appended)."""
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}{STAGING_MARK}{os.getpid()}-{host_tag()}-{uuid.uuid4().hex[:12]}"
                                   f"{suffix}")


def staging_owner(name):
    """``(pid, host tag)`` of the writer of the staging file ``name`` (host tag None in names written
    before it was part of them); None for a name that is not a staging name."""
    m = _STAGING_NAME.fullmatch(os.path.basename(name))
    return (int(m.group(1)), m.group(2)) if m else None


def is_staging_name(name):
    return staging_owner(name) is not None


def _process_alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OSError, OverflowError):
        return False
    return True


def _writer_gone(pid, host, mtime, now):
    if host == host_tag():
        return pid != os.getpid() and not _process_alive(pid)
    return now - mtime > LEFTOVER_AGE_S  # another host's process: its pid says nothing here


def remove_leftover_staging(directory):
    """Remove the staging files in ``directory`` (not its subfolders) whose writer is gone (see the
    module's rule); only regular files, never a link or a folder. Returns ``(count, bytes freed)``."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0, 0
    count = freed = 0
    now = time.time()
    for name in names:
        owner = staging_owner(name)
        if owner is None:
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or not _writer_gone(*owner, st.st_mtime, now):
                continue
            os.remove(path)
        except OSError:
            continue
        count += 1
        freed += st.st_size
    return count, freed


def current_umask():
    """The process umask, read without changing it where /proc allows (thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode():
    return 0o666 & ~current_umask()


def fsync_file(path):
    """fsync ``path``; an error propagates (the caller keeps the old file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory):
    """fsync a folder so a rename in it survives a power cut. Some file systems cannot fsync a
    folder (EINVAL / EBADF / EACCES): that is not a write error and is ignored; any other error
    (EIO, ENOSPC) propagates."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (22, 9, 13):  # EINVAL, EBADF, EACCES
            raise
    finally:
        os.close(fd)


def remove_quietly(*paths):
    for path in paths:
        try:
            if os.path.lexists(path):
                os.remove(path)
        except OSError:
            pass


def write_error(path, exc, what="file"):
    """The one message for a write that failed: names the file, the reason, and that the old one is kept."""
    reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
    resume = " with --resume auto (the run continues from its last checkpoint)" if what in TRAINING_FILES else ""
    return UserError(f"could not write {what} {path}: {reason}. Nothing was replaced: the previous "
                     f"version (if any) is kept. Free disk space or fix the folder, then rerun{resume}.")


def commit_staged(staged, path, what="file"):
    """fsync ``staged``, give it the umask's permissions and rename it onto ``path``; on any error
    remove ``staged``, keep ``path`` as it was and raise ``UserError`` naming it."""
    try:
        fd = os.open(staged, os.O_RDONLY | os.O_NOFOLLOW)  # a link put in its place is refused (ELOOP)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "the staging file was replaced by something else")
            os.fchmod(fd, default_file_mode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(staged, path)
    except OSError as exc:
        remove_quietly(staged)
        raise write_error(path, exc, what) from exc
    try:
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        raise write_error(path, exc, what) from exc
    return path


def create_staging(path, suffix=""):
    """Create (``O_EXCL``, mode 0600) a new staging file for ``path``; ``(fd, staged path)``. The
    caller writes it, then ``commit_staged`` puts it in place (or ``remove_quietly`` drops it)."""
    staged = staging_path(path, suffix)
    return os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), staged


def write_bytes_atomic(path, data, what="file"):
    staged = None
    try:
        fd, staged = create_staging(path)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as exc:
        if staged:
            remove_quietly(staged)
        raise write_error(path, exc, what) from exc
    except BaseException:
        if staged:
            remove_quietly(staged)
        raise
    return commit_staged(staged, path, what)


def write_text_atomic(path, text, what="file"):
    return write_bytes_atomic(path, text.encode("utf-8"), what)


def write_figure_atomic(fig, path, what="figure", dpi=100):
    """Save a matplotlib figure as PNG through a staging file (then ``commit_staged``); the figure
    is closed whatever happens. Takes the figure, so this module needs no matplotlib."""
    import matplotlib.pyplot as plt  # the caller has imported matplotlib already

    fd, staged = create_staging(path, ".png")
    os.close(fd)
    try:
        fig.savefig(staged, dpi=dpi, format="png")
    except BaseException:
        remove_quietly(staged)
        raise
    finally:
        plt.close(fig)
    return commit_staged(staged, path, what)
