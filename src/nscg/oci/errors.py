"""The errors of :mod:`nscg.oci`: each names the JSON path of the field at fault."""

from __future__ import annotations

from nscg.errors import SpecError, UnsupportedError

__all__ = ["OciSpecError", "OciUnsupportedError"]


class OciSpecError(SpecError):
    """A ``config.json`` field holds an invalid value.

    Attributes:
        path: the JSON path of the field, e.g. ``process.rlimits[2].hard``.
    """

    __module__ = "nscg.oci"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        text = str(self)
        prefix = f"{self.path}: "
        return (type(self), (self.path, text.removeprefix(prefix)))


class OciUnsupportedError(UnsupportedError):
    """A ``config.json`` field asks for something nscg cannot do (yet, or on this host).

    nscg never runs a bundle with less than it asks for: a field it cannot
    honour stops the load with this error rather than being dropped.

    Attributes:
        path: the JSON path of the field, e.g. ``linux.sysctl``.
    """

    __module__ = "nscg.oci"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}", feature=f"oci:{path}")
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        text = str(self)
        return (type(self), (self.path, text.removeprefix(f"{self.path}: ")))
