"""Errors a user can cause. The CLI turns these into one line on stderr and exit status 2."""


class MnistkitError(Exception):
    """Bad input or bad usage: the message is one sentence naming the thing and what to do."""


class DataError(MnistkitError):
    """A data file or data source is missing, malformed or fails its checksum."""


class ImageError(MnistkitError):
    """An input image is not an image, is empty, truncated or of an unsupported type."""


class ImageTooLargeError(ImageError):
    """An input image is over the byte or pixel limit (a decompression bomb, say)."""


class WriteError(MnistkitError, OSError):
    """A file could not be written (disk full, read-only folder); the old file is intact."""


class TrainingDiverged(Exception):
    """The training loss became NaN or infinite: the run stopped at once, its last checkpoint
    (from before) kept. Not a usage error: the CLI exits 1."""


class ServerFailed(Exception):
    """``mnistkit serve --workers``: every worker died and none could be started again. Not a
    usage error: the CLI exits 1."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a training run after it saved a checkpoint (``interrupt``)."""

    def __init__(self, signum: int, run_dir: object):
        super().__init__(signum, run_dir)
        self.signum, self.run_dir = signum, run_dir

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
