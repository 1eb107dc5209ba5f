"""Domain errors raised by services; views put them back on the form."""

from __future__ import annotations


class DomainError(Exception):
    """A business rule said no. ``field`` names the form field it belongs to, if any."""

    code = "domain_error"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class DuplicateEmail(DomainError):
    code = "duplicate_email"


class WeakPassword(DomainError):
    code = "weak_password"


class InvalidCredentials(DomainError):
    code = "invalid_credentials"


class InvalidTransition(DomainError):
    code = "invalid_transition"


class InvalidSetting(DomainError):
    code = "invalid_setting"


class InvalidToken(DomainError):
    code = "invalid_token"


class InvalidFile(DomainError):
    """An upload that is not an acceptable image (type, size, damage, dimensions)."""

    code = "invalid_file"


class StorageUnavailable(DomainError):
    """The file store could not be reached or refused the request; nothing was saved."""

    code = "storage_unavailable"
