"""Exception types. Every user mistake raises a subclass of ReactKDError; the CLI turns it into one
`error:` line and exit code 2."""

import unicodedata


class ReactKDError(Exception):
    """Base class for all errors caused by bad input or configuration."""


class ImageReadError(ReactKDError):
    """A file or folder could not be read as a 3D image."""


class ImageWriteError(ReactKDError):
    """An output image could not be written completely (full disk, quota, I/O error)."""


class GeometryError(ReactKDError):
    """Image geometry is unusable (spacing, direction, overlap, size)."""


class MaskError(ReactKDError):
    """A liver/tumour mask is empty, inconsistent or has unknown labels."""


class ManifestError(ReactKDError):
    """A cohort manifest is malformed or points at missing files."""


class ConfigError(ReactKDError):
    """A configuration file or option is invalid."""


class ModelPackageError(ReactKDError):
    """A model package is missing, tampered with or incompatible."""


class DeviceError(ReactKDError):
    """The requested compute device is unknown or unavailable."""


def one_line(message: str) -> str:
    """`message` as exactly one printable line, whatever it holds: its lines joined with ` | ` (a manifest's
    problems), every other control or format character escaped (`\\x1b`, `\\t`, `\\u202e`), so text from an
    input can never start a line of its own or move the cursor."""
    lines = [line for line in str(message).splitlines() if line.strip()]
    return "".join(char if unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Zl", "Zp")
                   else char.encode("unicode_escape").decode("ascii") for char in " | ".join(lines))
