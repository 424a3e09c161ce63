"""Errors a user can cause. The CLI turns these into one line on stderr and exit status 2."""


class MnistkitError(Exception):
    """Bad input or bad usage: the message is one sentence naming the thing and what to do."""


class DataError(MnistkitError):
    """A data file or data source is missing, malformed or fails its checksum."""


class ImageError(MnistkitError):
    """An input image is not an image, is empty, truncated or of an unsupported type."""


class ImageTooLargeError(ImageError):
    """An input image is over the byte or pixel limit (a decompression bomb, say)."""
