"""Claude Code's stream-json, read into an IterationRecord, the same way for every release.

An event is what its parsed top-level "type" (and "subtype") says, never where a key sits in the
line: 2.1.332 moved "type" 1,100-1,600 bytes into its result line. The process layer hands over only
lines that contain one of `MARKERS`, bare quoted names, so any JSON spacing matches while a word
inside a JSON string (its quotes escaped) never does. Such lines are few and each is parsed whole.

Observed on 2.1.197 and 2.1.332: an API failure still ends with a `result` (subtype success,
is_error true, exit 1) preceded by a synthetic assistant line (model "<synthetic>", a top-level
"error"); 2.1.332 adds api_error_type, api_error ("usage_limit_reached") and terminal_reason to both,
api_error_params.rate_limit_info to the synthetic line, and unifiedWindows to rate_limit_info.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker import signalcopy
from worker.clock import reset_time
from worker.process import RunResult
from worker.providers import (
    Failure,
    IterationRecord,
    LimitWindow,
    as_int,
    as_number,
    ending_failure,
    last_line,
    parse_object,
    truncate,
)

# "result" and "rate_limit_event" are values of "type"; the init line carries "claude_code_version";
# an API error's synthetic assistant line has model "<synthetic>" (its "error" names the failure, so
# system/api_retry lines are not needed). Each marker is one more scan of every chunk: four cost
# about what 2.1.197's three did.
MARKERS = (b'"result"', b'"rate_limit_event"', b'"claude_code_version"', b'"<synthetic>"')
REFUSALS = (
    "cannot be used with root/sudo privileges",
    "cannot be launched inside another Claude Code session",
    "Input must be provided either through stdin or as a prompt argument",
)
AUTH_FIX = "to fix: run `claude` and /login, or set ANTHROPIC_API_KEY"
_NOT_LOGGED_IN = "not logged in"
_AUTH_TYPES = ("authentication_error", "permission_error")
_SERVER_TYPES = ("overloaded_error", "api_error")
_SERVER_KINDS = ("server_error", "overloaded")
# The CLI stopping at the budget the worker gave it (--max-budget-usd): a budget stop, not retried.
_BUDGET_STOPS = frozenset({"error_max_budget_usd", "budget_exhausted"})
# The CLI giving up on --json-schema (5 invalid StructuredOutput calls): retried like an unexplained exit.
_SELF_STOPS = frozenset({"error_max_structured_output_retries", "structured_output_retry_exhausted"})


@dataclass(frozen=True)
class ApiError:
    """What the CLI said about an API failure, from the result and its synthetic assistant line."""

    status: int | None = None  # api_error_status (HTTP)
    kind: str = ""  # the synthetic line's "error": rate_limit | authentication_failed | server_error | ...
    error_type: str = ""  # api_error_type, e.g. rate_limit_error (2.1.332)
    error: str = ""  # api_error, e.g. usage_limit_reached (2.1.332)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def is_api_error_line(event: dict) -> bool:
    """A synthetic assistant line reporting an API error (both versions), not a model's words."""
    if event.get("is_api_error_message") is True:
        return True
    message = event.get("message")
    model = message.get("model") if isinstance(message, dict) else None
    return model == "<synthetic>" and isinstance(event.get("error"), str)


def _synthetic_text(event: dict) -> str:
    message = event.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return " ".join(_text(b.get("text")) for b in content if isinstance(b, dict)).strip()
    return ""


class ClaudeStream:
    """Reads the events that matter; everything else is only logged."""

    markers = MARKERS

    def __init__(self) -> None:
        self.result: dict | None = None
        self.synthetic: dict | None = None  # the last API-error assistant line
        self.version = ""  # claude_code_version from system/init
        self.windows: dict[str, LimitWindow] = {}
        self.rejected = False
        self.resets_at: float | None = None  # the latest reset of a rejected window

    # -- reading -----------------------------------------------------------------------------------

    def feed(self, line: bytes) -> None:
        event = parse_object(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "result":
            self.result = event
        elif kind == "rate_limit_event":
            info = event.get("rate_limit_info")
            info = info if isinstance(info, dict) else {}
            self._limit(info)
            windows = info.get("unifiedWindows", event.get("unifiedWindows"))
            if isinstance(windows, dict):
                for name, window in windows.items():
                    if isinstance(window, dict):
                        self._window(str(name), window)
        elif kind == "system" and event.get("subtype") == "init":
            if isinstance(event.get("claude_code_version"), str):
                self.version = event["claude_code_version"]
        elif kind == "assistant" and is_api_error_line(event):
            self.synthetic = event
            params = event.get("api_error_params")
            info = params.get("rate_limit_info") if isinstance(params, dict) else None
            if isinstance(info, dict):
                self._limit(info)

    def _limit(self, info: dict) -> None:
        """rate_limit_info: the window it names (2.1.197 gives no per-window breakdown)."""
        name = info.get("rateLimitType")
        if isinstance(name, str) and name:
            self._window(name, info)
        elif info.get("status") == "rejected":
            self._rejected(as_number(info.get("resetsAt")))

    def _window(self, name: str, data: dict) -> None:
        old = self.windows.get(name)
        utilization = as_number(data.get("utilization"))
        if utilization is None and old is not None:
            utilization = old.utilization  # a line without it does not unsay the last one
        status = _text(data.get("status"))
        reset = as_number(data.get("resetsAt"))
        self.windows[name] = LimitWindow(name, utilization, reset, status)
        if status == "rejected":
            self._rejected(reset)

    def _rejected(self, reset: float | None) -> None:
        self.rejected = True
        if reset is not None and (self.resets_at is None or reset > self.resets_at):
            self.resets_at = reset

    # -- the record ----------------------------------------------------------------------------------

    def finish(self, run: RunResult, stderr_tail: str) -> IterationRecord:
        facts: dict[str, Any] = {
            "cli": f"claude {self.version}" if self.version else "",
            "limits": tuple(self.windows.values()),
        }
        usage = self._usage()
        if (stopped := ending_failure(run)) is not None:
            return IterationRecord(failure=stopped, message=f"child {run.ending.value}", **usage, **facts)
        result = self.result
        if result is None:
            return self._without_result(run, stderr_tail, facts)
        text = _text(result.get("result"))
        errors = result.get("errors")
        if not text and isinstance(errors, list):
            text = "; ".join(str(e) for e in errors)
        api = self._api_error(result)
        failure = None
        problem = ""
        if result.get("is_error") or run.exit_code not in (0, None):
            failure = classify(result, api, self.rejected, text)
        if usage["cost_usd"] is None:
            problem = self._problem("the CLI's result event has no cost (total_cost_usd)")
            failure = failure or Failure.NO_RESULT
        return IterationRecord(
            failure=failure,
            message=_message(failure, text or problem),
            resets_at=self._reset(failure, text),
            api_status=api.status,
            stream_problem=problem,
            **_copy(result, text),
            **usage,
            **facts,
        )

    def _without_result(self, run: RunResult, stderr_tail: str, facts: dict) -> IterationRecord:
        if any(r in stderr_tail for r in REFUSALS):
            return IterationRecord(failure=Failure.REFUSED, message=last_line(stderr_tail), **facts)
        if self.synthetic is not None:  # the error was said, only its result line is missing
            text = _synthetic_text(self.synthetic)
            api = self._api_error({})
            failure = classify({}, api, self.rejected, text)
            problem = self._problem("the CLI's result event was not understood") if run.exit_code == 0 else ""
            return IterationRecord(
                failure=failure,
                message=_message(failure, text),
                resets_at=self._reset(failure, text),
                api_status=api.status,
                stream_problem=problem,
                **facts,
            )
        if run.exit_code == 0:
            problem = self._problem("the CLI's result event was not understood")
            return IterationRecord(
                failure=Failure.NO_RESULT, message=problem, stream_problem=problem, **facts
            )
        # It printed, then failed without its result line: say so instead of a bare exit code.
        problem = self._problem("the CLI's stream ended without a result event") if run.stdout_bytes else ""
        why = last_line(stderr_tail) or problem
        return IterationRecord(
            failure=Failure.EXIT,
            message=f"exit {run.exit_code}: {why}".strip(),
            stream_problem=problem,
            **facts,
        )

    def _api_error(self, result: dict) -> ApiError:
        """The result's fields, completed from the synthetic line (2.1.332 puts them in both)."""
        synthetic = self.synthetic or {}

        def pick(key: str) -> object:
            value = result.get(key)
            return value if value is not None else synthetic.get(key)

        return ApiError(
            status=as_int(pick("api_error_status")),
            kind=_text(synthetic.get("error")),
            error_type=_text(pick("api_error_type")),
            error=_text(pick("api_error")),
        )

    def _reset(self, failure: Failure | None, text: str) -> float | None:
        if failure is not Failure.USAGE_LIMIT:
            return None
        return self.resets_at or reset_time(text)

    def _problem(self, what: str) -> str:
        # Only the init line says (every release so far has one); asking `claude --version` here
        # could run anything CLAUDE_PATH names with an argument it does not know.
        return f"{what} — CLI version {self.version or 'unknown'}"

    def _usage(self) -> dict:
        result = self.result or {}
        usage = raw if isinstance(raw := result.get("usage"), dict) else {}
        return {
            "turns": as_int(result.get("num_turns")),
            "tokens_in": as_int(usage.get("input_tokens")),
            "tokens_out": as_int(usage.get("output_tokens")),
            "tokens_cached": as_int(usage.get("cache_read_input_tokens")),
            "cost_usd": as_number(result.get("total_cost_usd")),
        }


def _copy(result: dict, text: str) -> dict:
    """The signal's second copy: StructuredOutput's validated input, else a final text that is JSON."""
    structured = result.get("structured_output")
    if structured is not None:
        return {"signal_copy": structured, "signal_copy_source": signalcopy.STRUCTURED}
    answer = signalcopy.from_text(text)
    return {"signal_copy": answer, "signal_copy_source": signalcopy.FINAL} if answer is not None else {}


def classify(result: dict, api: ApiError, rejected: bool, text: str) -> Failure:
    """Why a run failed: the newer fields when present, the older ones (status, wording) otherwise."""
    subtype, terminal = _text(result.get("subtype")), _text(result.get("terminal_reason"))
    if subtype == "error_max_turns" or terminal == "max_turns":
        return Failure.MAX_TURNS
    if subtype in _BUDGET_STOPS or terminal in _BUDGET_STOPS:
        return Failure.BUDGET
    if api.error == "usage_limit_reached" or rejected:
        return Failure.USAGE_LIMIT
    if _is_auth(api, text):
        return Failure.AUTH
    if api.status == 429 or api.error_type == "rate_limit_error" or api.kind == "rate_limit":
        # The CLI has already retried the 429 itself (minutes of backoff), so with an API key this
        # is a usage limit without a reset time; only its own "not your usage limit" says otherwise.
        return Failure.OVERLOADED if "not your usage limit" in text else Failure.USAGE_LIMIT
    status = api.status
    if (status is not None and status >= 500) or api.error_type in _SERVER_TYPES or api.kind in _SERVER_KINDS:
        return Failure.OVERLOADED
    if subtype in _SELF_STOPS or terminal in _SELF_STOPS:
        return Failure.EXIT
    return Failure.API_ERROR


def _is_auth(api: ApiError, text: str) -> bool:
    if api.status in (401, 403) or api.error_type in _AUTH_TYPES or api.kind == "authentication_failed":
        return True
    return text.lower().startswith(_NOT_LOGGED_IN)  # no key, no login: no API call was even made


def _message(failure: Failure | None, text: str) -> str:
    """The CLI's words; for a login problem, also the command that fixes it."""
    if failure is Failure.AUTH:
        return truncate(f"{text.strip()} ({AUTH_FIX})" if text.strip() else AUTH_FIX)
    return truncate(text)
