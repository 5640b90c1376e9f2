"""The one exception type a user sees: a paragraph that says what was wrong and what to do."""


class MnistArchError(Exception):
    """Bad input (a file, a number, a model that cannot be built or run).

    The command line prints the message as one paragraph on stderr and exits with code 2;
    library callers get the same message from the exception.
    """
