"""The command line's one kind of user error: an option or input that cannot work. Every
command raises it (or its own subclass) for bad input, and ``plugpay`` answers it the same
way everywhere: one line naming the thing, exit code 2. Failures at run time (a broker that
does not answer, a refused session) are exit code 1."""


class UsageError(ValueError):
    """Bad input the user can fix: the text names the option, file or field."""


USAGE = 2  # exit code of bad input
FAILURE = 1  # exit code of a failure at run time
