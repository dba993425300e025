"""What every strategy backend shares: the proposal context, replies and retry policy.

Two kinds of backend exist:

* a **planner** (``analyst``, ``grid``) computes a :class:`~agentic_toolkit.pruning.strategy.Strategy`
  directly from the structured context (history, scopes, profile);
* a **language model** (``anthropic``, ``openai``, any ``prompt -> text`` callable) gets the
  rendered prompt and returns text or a tool call, which the caller parses as untrusted input.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...errors import ToolkitError
from ...pruning.strategy import Strategy

#: The longest reply kept (UTF-8 bytes of the text and tool input): a longer one is cut to
#: this, recorded as too long and treated as a bad reply (repaired, else the analyst proposes).
MAX_REPLY_BYTES = 256 * 1024

#: The packaged prompt templates (``analysis.txt``, ``repair.txt``, ``system.txt``).
PROMPT_DIR = Path(__file__).resolve().parent.parent / "prompts"


@lru_cache(maxsize=1)
def system_prompt() -> str:
    """The system prompt every language-model backend sends (``prompts/system.txt``)."""
    return (PROMPT_DIR / "system.txt").read_text(encoding="utf-8").strip()


class BackendError(ToolkitError, RuntimeError):
    """A language-model backend failed to answer (network, timeout, HTTP error after retries)."""


class RetryableError(BackendError):
    """A transient failure (429, 5xx, timeout, connection) worth retrying after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ProposalContext:
    """Everything a backend may use to propose the next strategy (read-only).

    ``history`` holds the revision records of this search so far (dicts as written to the
    history JSONL, oldest first); ``scopes`` is :func:`agentic_toolkit.describe_scopes`'s
    table (a DataFrame, possibly empty); ``profile`` is a
    :class:`~agentic_toolkit.profiling.profile.MacProfile` or ``None``. ``constraints``:
    the budgets besides the MAC target (``{"latency": "60%"}``); ``latency``: the device and
    unpruned latency when a latency table is known (the scope table then has
    ``latency_share`` and ``latency_per_mac``; :mod:`~agentic_toolkit.agents.latency_view`).
    ``min_macs``: ``strategy -> the smallest MACs it can reach at any ratio`` (in a search,
    :func:`~agentic_toolkit.agents.targets.reach_oracle`), so that a planner can keep its
    proposals within the budget solver's reach; None outside a search.
    """

    target_macs: int
    base_macs: int
    tolerance: tuple[float, float]
    scopes: Any
    history: tuple[dict, ...] = ()
    profile: Any = None
    revision: int = 1
    max_revisions: int = 5
    solve_budget: bool = False
    base_strategy: Strategy = field(default_factory=Strategy)
    constraints: dict = field(default_factory=dict)
    latency: dict | None = None
    min_macs: Callable[[Strategy], int] | None = None

    @property
    def band(self) -> tuple[float, float]:
        """Accepted MACs ``(low, high)``: at most ``over`` % above, ``under`` % below target."""
        over, under = self.tolerance
        return self.target_macs * (1 - under / 100.0), self.target_macs * (1 + over / 100.0)

    @property
    def aim_macs(self) -> float:
        """The middle of the band: the MAC count a proposer should aim at."""
        low, high = self.band
        return 0.5 * (low + high)

    def scope_names(self) -> list[str]:
        """Names accepted as keys of ``Strategy.multipliers``."""
        if self.scopes is None or len(self.scopes) == 0:
            return []
        return [str(n) for n in self.scopes["name"]]


@dataclass
class Reply:
    """A language model's answer: the raw text as received, and tool input when it used a tool.

    Backends also fill ``stop_reason`` (normalised: ``"end"``, ``"tool"``, ``"max_tokens"`` for
    a reply cut off by the token limit, or the server's raw value), ``usage`` (``input_tokens``
    and ``output_tokens`` when the server reports them) and ``seconds`` (wall time of the
    request, retries included). ``problem`` says why the reply cannot be used as received
    (an HTTP body that is not JSON or not UTF-8, a reply over :data:`MAX_REPLY_BYTES`): the
    Analysis agent treats it as a bad reply (one repair request, then the analyst).
    """

    text: str
    data: dict | None = None
    meta: dict = field(default_factory=dict)
    stop_reason: str | None = None
    usage: dict = field(default_factory=dict)
    seconds: float | None = None
    problem: str | None = None

    @property
    def truncated(self) -> bool:
        """True when the reply was cut off by the token limit (``stop_reason == "max_tokens"``)."""
        return self.stop_reason == "max_tokens"

    def raw(self) -> str:
        """What to record as the raw reply: tool input as JSON if any, plus any text."""
        parts = []
        if self.text:
            parts.append(self.text)
        if self.data is not None:
            parts.append(json.dumps(self.data, sort_keys=True))
        return "\n".join(parts)


def cut_bytes(text: str, limit: int = MAX_REPLY_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (never inside a character)."""
    data = text.encode("utf-8", "replace")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def cap_reply(reply: Reply, limit: int = MAX_REPLY_BYTES) -> Reply:
    """``reply``, or when its raw text is longer than ``limit`` bytes a reply holding the first
    ``limit`` bytes as text, with ``problem`` saying it was too long."""
    raw = reply.raw()
    size = len(raw.encode("utf-8", "replace"))
    if size <= limit:
        return reply
    problem = f"the reply is too long ({size:,} bytes; at most {limit:,} are read); answer briefly with one JSON object"
    return Reply(text=cut_bytes(raw, limit), meta=reply.meta, stop_reason=reply.stop_reason, usage=reply.usage,
                 seconds=reply.seconds, problem=reply.problem or problem)


def undecodable_reply(body: bytes | str, why: str, meta: dict | None = None) -> Reply:
    """A bad reply for an HTTP 200 body that is not what the API sends (not JSON, not UTF-8,
    not a reply): its text is the body as far as it decodes (cut to :data:`MAX_REPLY_BYTES`)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    problem = f"the server's answer is not a valid reply ({why}); answer with one JSON object"
    return Reply(text=cut_bytes(text), meta=dict(meta or {}), problem=problem)


class Backend:
    """Base class; subclasses are planners (``propose``) or language models (``request``)."""

    name = "backend"
    is_llm = False

    def describe(self) -> dict:
        """Public configuration for the history log (never keys or secrets)."""
        return {"backend": self.name}

    def secrets(self) -> list[str]:
        """Strings that must never be written to a log (e.g. the API key)."""
        return []


class PlannerBackend(Backend):
    """A backend that computes the strategy itself."""

    def propose(self, ctx: ProposalContext) -> tuple[Strategy, str]:
        """Return ``(strategy, rationale)`` for ``ctx.revision``."""
        raise NotImplementedError


class LLMBackend(Backend):
    """A language model: ``request`` sends a conversation, returns a :class:`Reply`.

    ``request(messages, tool_schema, system=None)``: ``system`` is a rendered system prompt
    that replaces the backend's own (:meth:`default_system`) for this request; the Analysis
    agent passes it only when the caller gave one (``system=``). A backend whose ``request``
    has no ``system`` parameter still works; it then refuses a custom system prompt.
    """

    is_llm = True

    def request(self, messages: Sequence[dict], tool_schema: dict, system: str | None = None) -> Reply:
        """Send ``messages`` (``{"role", "content"}`` dicts, user first) and return the reply."""
        raise NotImplementedError

    def default_system(self) -> str | None:
        """The system prompt sent when none is given: a ``system`` text attribute, else the packaged one."""
        own = getattr(self, "system", None)
        return own if isinstance(own, str) else system_prompt()

    def repair_messages(self, prompt: str, reply: Reply, repair_text: str) -> list[dict]:
        """The conversation for a repair request: prompt, the bad reply, the repair message."""
        return [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": reply.raw() or "(empty reply)"},
            {"role": "user", "content": repair_text},
        ]


class CallableBackend(LLMBackend):
    """Any Python callable ``prompt -> text`` (a local model, a notebook stub, a human).

    A callable gets the prompt only (no system prompt); a ``dict`` it returns is taken as
    the tool input, anything else as the reply text.
    """

    def __init__(self, fn: Callable[[str], str], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")
        if self.name == "<lambda>":
            self.name = "callable"

    def default_system(self) -> str | None:
        return None  # a callable gets the prompt only

    def request(self, messages: Sequence[dict], tool_schema: dict) -> Reply:
        if len(messages) == 1:
            prompt = messages[0]["content"]
        else:  # a callable has no conversation: flatten it, role-tagged
            prompt = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
        try:
            out = self.fn(prompt)
        except Exception as exc:  # the user's callable failed: report, let the analyst take over
            raise BackendError(f"{self.name} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(out, dict):
            return Reply(text="", data=out)
        return Reply(text="" if out is None else str(out))


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff for transient failures (429, 5xx, timeouts).

    ``retries`` is the number of extra attempts after the first; the wait before retry ``k``
    (0-based) is ``min(backoff * 2**k, max_backoff)`` with +-25% jitter, or the server's
    ``Retry-After`` when it sends one (also capped at ``max_backoff``).
    """

    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ToolkitError(f"retries must be an integer >= 0, got {self.retries!r}")
        if not (isinstance(self.backoff, (int, float)) and self.backoff >= 0 and math.isfinite(self.backoff)):
            raise ToolkitError(f"backoff must be a number of seconds >= 0, got {self.backoff!r}")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None and retry_after >= 0:
            return min(float(retry_after), self.max_backoff)
        base = min(self.backoff * 2.0**attempt, self.max_backoff)
        return base * (0.75 + 0.5 * rng.random())

    def run(self, call: Callable[[], Any], what: str, log: list[str]) -> Any:
        """Call ``call()`` until it succeeds or retries are used up; ``log`` gets one line per failure."""
        rng = random.Random(0)  # jitter only; a fixed seed keeps runs reproducible
        for attempt in range(self.retries + 1):
            try:
                return call()
            except RetryableError as exc:
                log.append(f"attempt {attempt + 1}: {exc}")
                if attempt == self.retries:
                    err = BackendError(f"{what} failed after {self.retries + 1} attempts; last error: {exc}")
                    err.attempts = list(log)
                    raise err from exc
                time.sleep(self.delay(attempt, exc.retry_after, rng))
        raise AssertionError("unreachable")
