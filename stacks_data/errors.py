"""
The package's error vocabulary: a user's mistake (or their machine's) versus a bug of ours.

A `UserError` is reported as one line, `error: <what> (<where>): <what to do>`, with no traceback
(cli.py does that mapping, once); anything else is a bug and keeps its traceback. `where` names the
flag, file, row or URL at fault; `todo` says how to get past it.
"""

import errno


class UserError(Exception):
    """Something the user can fix: a flag, an input file, the network, the disk. Exit status 1."""

    exit_code = 1
    default_todo = ""

    def __init__(self, what: str, where: str | None = None, todo: str | None = None):
        super().__init__(what, where, todo)  # all three in args: the error pickles across processes
        self.what, self.where, self.todo = what, where, todo if todo is not None else self.default_todo

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        todo = f": {self.todo}" if self.todo else ""
        return " ".join(f"{self.what}{where}{todo}".split())  # one line, whatever a library's message holds


class FlagError(UserError):
    """A flag's value, alone or with others. Exit status 2, as argparse's own errors."""

    exit_code = 2
    default_todo = "see --help"


class InputError(UserError):
    """Bad input data: `where` names the file and, where known, the row and field."""

    default_todo = "fix or replace that input"


class NetworkError(UserError):
    """A download that cannot happen; `todo` names the offline form of that input."""


class OutputError(UserError):
    """The output folder: taken by another run, made with other settings, not writable, disk full."""


class WorkerError(UserError):
    """An unexpected error inside a worker, named by the work item it was processing.

    Only strings travel back from the worker (a pyo3 PanicException, say, does not pickle);
    `traceback` is the worker's, shown with --debug.
    """

    default_todo = ("if that input is intact, this is a bug in stacks-data: please report it "
                    "(rerun with --debug for the traceback)")

    def __init__(self, what: str, where: str | None = None, todo: str | None = None, traceback: str = ""):
        super().__init__(what, where, todo)
        self.args = (what, where, todo, traceback)
        self.traceback = traceback


# OSErrors that are about the user's machine, not our code: reported as OutputError lines
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def from_os_error(e: OSError) -> UserError | None:
    """The UserError an OSError stands for (disk full, read-only, no permission), else None."""
    what = _ENVIRONMENT_ERRNOS.get(e.errno)
    if what is None:
        return None
    return OutputError(what, e.filename or None, "free some space or pick a writable --out-dir, then rerun "
                       "(finished work is kept)" if e.errno in (errno.ENOSPC, errno.EDQUOT)
                       else "pick a folder you can write to (--out-dir), or fix its permissions")
