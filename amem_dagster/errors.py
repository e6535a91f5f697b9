"""The few exception types that cross module boundaries; each carries one readable line for people."""


class AmemError(Exception):
    """Base class: the message is a complete sentence fit for a CLI's one-line error."""


class SettingsError(AmemError):
    """A setting (environment variable or option) has a value the system cannot use."""


class ServiceUnavailable(AmemError):
    """A required service (broker, database, vector store) cannot be reached."""


class EventRejected(AmemError):
    """A memory event breaks the contract; `code` is the short reason sent as the DLQ header."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
