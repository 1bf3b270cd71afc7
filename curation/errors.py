"""The one error type of the loop's services: a request it cannot carry out, with the reason in words."""


class CurationError(Exception):
    """A request the loop cannot carry out, with the reason in words."""
