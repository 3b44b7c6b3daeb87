"""The one exception tree of aoe.

Every error a user can see is an ``AoeError``: it knows its exit code, where it happened
(``where``: ``FILE:LINE:COL`` or ``workflow/agent#attempt``) and a ``hint`` that names the
fix. The CLI turns them into ``error: ...`` / ``hint: ...`` and an exit code in exactly
one place.

    AoeError                      exit 1
    ├── UsageError                exit 2   bad CLI values, unreadable input files
    ├── SpecError                 exit 2   YAML, schema, references, templates, graph;
    │                                      carries every Problem found in a file
    ├── ConfigError               exit 2   aoe.yaml, unknown provider, no price for a budget
    ├── MissingKeyError           exit 2   an api_key_env variable that is not set
    ├── BudgetExceededError       exit 3   the next call would not fit a budget
    ├── RateLimitTimeoutError              a rate-limit wait ran past its deadline
    │   └── RateLimitClosedError           the provider closed the key for longer than a
    │                                      retry waits (a Retry-After over 120 s); says when
    │                                      it opens again
    ├── OutputValidationError              the answer does not match output_schema (retriable)
    │   └── OutputTruncatedError           not retriable: cut at max_tokens, so the same
    │                                      request would be cut again
    ├── TemplateRenderError                a prompt failed to render at run time
    ├── ToolError                          a tool could not be run
    ├── LedgerError                        the SQLite ledger could not be read or written
    │   └── LedgerUnusableError   exit 2   --db / AOE_DB names no usable ledger
    ├── RunLeaseHeldError         exit 2   another live process runs or resumes this run
    ├── RunLeaseLostError                  another process took this run over meanwhile
    └── ProviderError                      translated once, at the provider boundary
        ├── ProviderTimeout                retriable, outcome unknown
        ├── ProviderConnectionError        retriable
        ├── RateLimitedError               retriable, 429 rate limit (retry_after_s); a
        │                                  429 about calls in flight says ``concurrency``
        ├── ServerError                    retriable, 5xx
        ├── OverloadedError                retriable, Anthropic 529
        ├── MalformedResponseError         retriable, the answer breaks the API's promise
        ├── QuotaExceededError             not retriable, billing / spend limit 429
        ├── AuthenticationError            not retriable, 401 / 403
        └── BadRequestError                not retriable, 400 / 404 / 409 / 413 / 422

Whether an error is worth another attempt is a property of its class (``retriable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from aoe.providers.base import Usage


class AoeError(Exception):
    """Base of every error aoe raises on purpose."""

    exit_code: ClassVar[int] = 1
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class UsageError(AoeError):
    """A command-line value or an input file the user named is wrong."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a workflow, agent or config file, at a place in it."""

    file: str
    line: int
    col: int
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class SpecError(AoeError):
    """A workflow file is wrong; ``problems`` lists every problem found, in file order."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        if not problems:
            raise ValueError("SpecError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        first = self.problems[0]
        super().__init__(
            first.message, where=f"{first.file}:{first.line}:{first.col}", hint=first.hint
        )

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class ConfigError(AoeError):
    """The provider configuration (aoe.yaml) is wrong or does not cover a workflow."""

    exit_code = 2


class MissingKeyError(AoeError):
    """An API key variable is not set. The message names the variable, never a value."""

    exit_code = 2


class BudgetExceededError(AoeError):
    """The next call would not fit into a run, workflow or agent budget."""

    exit_code = 3


class RateLimitTimeoutError(AoeError):
    """Waiting for rate-limit capacity took longer than allowed."""

    retriable = True


def wall_time_text(epoch_s: float) -> str:
    """An epoch time as a person reads it in any log: ``2026-01-01 00:05:00 UTC``."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class RateLimitClosedError(RateLimitTimeoutError):
    """A provider key is closed: a 429 asked to wait longer than a retry ever waits.

    The call is not sent. ``retry_after_s`` is how long the key stays closed from now, so
    the retry policy retries only once that is within its cap; ``opens_at`` is when the key
    opens again (epoch seconds), which the message gives as a wall-clock time.
    """

    def __init__(
        self, key: str, *, opens_at: float, retry_after_s: float, where: str | None = None
    ) -> None:
        when = wall_time_text(opens_at)
        super().__init__(
            f"{key} is closed: the provider answered 429 asking to wait {retry_after_s:.0f} s, "
            f"longer than aoe waits for a retry; it opens again at {when}",
            where=where,
            hint=f"run it again (or aoe run --resume) after {when}",
        )
        self.opens_at = opens_at
        self.retry_after_s = retry_after_s


class OutputValidationError(AoeError):
    """The model's answer is not valid against the agent's output_schema."""

    retriable = True

    def __init__(
        self, message: str, *, where: str | None = None, hint: str | None = None, text: str = ""
    ) -> None:
        super().__init__(message, where=where, hint=hint)
        self.text = text


class OutputTruncatedError(OutputValidationError):
    """The answer stopped at ``max_tokens`` before it was valid: the same request would be
    cut the same way (and paid again), so it is not retried."""

    retriable = False


class TemplateRenderError(AoeError):
    """A prompt template failed to render with the values of this run."""


class ToolError(AoeError):
    """A tool an agent asked for could not be run."""


class LedgerError(AoeError):
    """The ledger database could not be opened, migrated, read or written."""


class LedgerUnusableError(LedgerError):
    """The ledger named by ``--db`` or ``AOE_DB`` cannot be opened: a directory, not an
    SQLite file, unwritable, or from a newer aoe. Bad input, so exit code 2."""

    exit_code = 2


class RunLeaseHeldError(AoeError):
    """Another process holds the run's lease (its heartbeat is fresh): it runs or resumes
    that run now. Refused before anything is spent; the message names the holder's pid,
    host and since when."""

    exit_code = 2


class RunLeaseLostError(AoeError):
    """This process's lease on its run was taken over (it missed its heartbeats for the
    whole window): it stops, and records nothing more, so that one process runs the run."""


#: What a provider's 429 was about: calls or tokens per period, calls in flight at once,
#: or money (a billing or spend limit, never retried).
RateLimitKind = Literal["rate_limit", "concurrency", "quota"]


class ProviderError(AoeError):
    """A provider call failed; raised ``from`` the transport's exception or built from the response.

    ``outcome_unknown`` is true when the request may have reached the provider and been
    billed although no usage came back (a timeout or a cut connection after sending).
    ``should_retry`` is the provider's own word (``x-should-retry``) when it sent one;
    ``False`` vetoes a retry even for a retriable class.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        where: str | None = None,
        hint: str | None = None,
        retry_after_s: float | None = None,
        error_type: str | None = None,
        outcome_unknown: bool = False,
        usage: Usage | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message, where=where, hint=hint)
        self.provider = provider
        self.should_retry = should_retry
        self.status = status
        self.retry_after_s = retry_after_s
        self.error_type = error_type
        self.outcome_unknown = outcome_unknown
        self.usage = usage

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        base = f"{self.provider}{status}: {self.message}"
        return f"{self.where}: {base}" if self.where else base

    @property
    def limited(self) -> RateLimitKind | None:
        """What the provider's 429 was about; None when this is no 429."""
        return None


class ProviderTimeout(ProviderError):
    retriable = True


class ProviderConnectionError(ProviderError):
    """The connection failed; without ``outcome_unknown`` the request never left (the
    connection was refused, the name did not resolve, connecting timed out)."""

    retriable = True


class RateLimitedError(ProviderError):
    """A 429 rate limit; ``concurrency`` when it said too many calls were in flight at once."""

    retriable = True

    def __init__(self, message: str, *, concurrency: bool = False, **details: Any) -> None:
        super().__init__(message, **details)
        self.concurrency = concurrency

    @property
    def limited(self) -> RateLimitKind:
        return "concurrency" if self.concurrency else "rate_limit"


class ServerError(ProviderError):
    retriable = True


class OverloadedError(ProviderError):
    retriable = True


class MalformedResponseError(ProviderError):
    retriable = True


class QuotaExceededError(ProviderError):
    @property
    def limited(self) -> RateLimitKind | None:
        return "quota" if self.status == 429 else None


class AuthenticationError(ProviderError):
    pass


class BadRequestError(ProviderError):
    pass
