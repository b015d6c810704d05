"""Domain errors. The CLI maps them to exit codes: user errors 1, usage 2, bugs 3."""

from __future__ import annotations


class QAError(Exception):
    """Base of every error qa-inspect raises on purpose."""

    exit_code = 1

    def __reduce__(self) -> tuple[object, ...]:
        # pickled whole (message and attributes such as file/line/rule id): errors raised in pool
        # or dask workers reach the client as they were raised
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(cls: type[QAError], args: tuple[object, ...], state: dict[str, object]) -> QAError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class UserError(QAError):
    """Bad input or configuration the user can fix (exit code 1)."""


class InputError(UserError):
    """A data file cannot be used. Names the file, line and field so the user can find it."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field = file, line, field
        where = []
        if file:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if field:
            where.append(f"field '{field}'")
        prefix = ":".join(where[:2]) + (f" ({where[2]})" if len(where) > 2 else "")
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(UserError):
    """A rule, profile, scorecard, knowledge or shops file is invalid.

    Names the file, the rule id (when there is one) and the key path, e.g.
    ``rules/attitude.yaml: rule ATT-003: examples.fail[2]: ...``.
    """

    def __init__(self, message: str, *, file: str | None = None, rule_id: str | None = None,
                 key_path: str | None = None) -> None:
        self.file, self.rule_id, self.key_path = file, rule_id, key_path
        parts = [p for p in (str(file) if file else None,
                             f"rule {rule_id}" if rule_id else None,
                             key_path) if p]
        super().__init__(": ".join([*parts, message]))


class UsageError(QAError):
    """Arguments that do not make sense together (exit code 2)."""

    exit_code = 2


class BugError(QAError):
    """An internal contract was broken: a bug in qa-inspect, not in the user's data (exit 3)."""

    exit_code = 3


class LockError(UserError):
    """Another run holds the output folder's lock."""
