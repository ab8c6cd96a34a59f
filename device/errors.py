"""Device-side error hierarchy: specific errors inside, one-line messages at the edges."""

from shared.errors import InputError


class DeviceError(Exception):
    """Base class for device agent errors."""


class SourceError(DeviceError, InputError):
    """The sensor source (serial port or trace file) cannot be opened or read."""


class SetupError(DeviceError, InputError):
    """A file or folder the agent is configured with cannot be used (state dir, cloud key)."""


class CommandError(DeviceError):
    """A downlink command was refused (bad signature, replayed, malformed, unknown)."""
