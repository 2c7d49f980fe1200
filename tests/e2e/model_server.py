"""A scripted model server on 127.0.0.1 for the real Claude Code and Codex CLIs.

It speaks the Anthropic Messages API (`POST /v1/messages`, streaming SSE or plain JSON) and the OpenAI
Responses API (`POST /v1/responses`, streaming SSE). It keeps no conversation state: both CLIs resend
the whole history, so the next action is picked by how many tool results the request already carries.

A script is a list of actions. `Shell(cmd)` becomes a `Bash` tool_use for Claude and an `exec_command`
function call for Codex; `Tool(name, input)` is any other tool call; `Reply(text)` ends the turn.
`Fail(...)` entries do not take a step: they are attached to the next non-Fail action and fail the
requests made for that step (all of them, or the first `times`), streaming and non-streaming alike.

    with ModelServer(lambda text: [Shell("echo hi > out.txt"), Reply("done")]) as server:
        ... run a CLI against server.port ...

`script` is a list, or a callable given the request's user text (the prompt; see parse_session_context).
`[Fail(FailKind.RATE_LIMIT)]` fails every call; `[Fail(FailKind.OVERLOADED, times=1), Reply("ok")]` fails
one call, then answers. `Fail` counters live in the server (`reset()` clears them with the record).
Requests that offer no tools (side requests: titles, quota checks) get a short "ok" and never fail.
Successful Anthropic answers carry `anthropic-ratelimit-unified-*: allowed` headers (reset in
`unified_reset_in` s), so an OAuth-login CLI prints its `rate_limit_event` lines as with the real API.
Every request is kept in `requests` (`describe()` gives one line each, for assertion messages).

A conversational script sees the whole request instead of counting steps: `converse` is given a
`Conversation` (the user's text blocks, every tool call with its result) and returns the next action,
or None to leave the request to `script`. One server can so play a parent session, which decides from
what its tools printed, and the children the worker spawns, which follow a step script:

    ModelServer(phase_script, converse=lambda conv: None if child(conv) else parent_step(conv))
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Shell:
    """Run a shell command: Claude's `Bash {"command"}`, Codex's `exec_command {"cmd"}`."""

    command: str


@dataclass(frozen=True)
class Tool:
    """Call any other tool by name, e.g. Tool("Write", {"file_path": ..., "content": ...})."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """Final assistant text: ends the turn."""

    text: str


class FailKind(str, enum.Enum):
    RATE_LIMIT = "rate_limit"  # 429 with retry-after and rate-limit reset headers
    UNIFIED_REJECTED = "unified_rejected"  # 429 + anthropic-ratelimit-unified-status: rejected (subscription)
    USAGE_LIMIT = "usage_limit"  # Codex: 429 usage_limit_reached with resets_in_seconds; Claude: as above
    OVERLOADED = "overloaded"  # Claude 529 overloaded_error; Codex 503
    SERVER_ERROR = "server_error"  # 500
    UNAUTHORIZED = "unauthorized"  # 401
    STREAM_ERROR = "stream_error"  # 200, first delta, then an SSE error event (JSON calls get a 500)
    STALL = "stall"  # 200, first delta, then silence until the server stops
    HANG = "hang"  # request read, no answer at all until the server stops


@dataclass(frozen=True)
class Fail:
    """Fail the requests of the step this is attached to: every one (times=None) or the first `times`."""

    kind: FailKind
    times: int | None = None
    retry_after: float = 1.0  # seconds, for RATE_LIMIT
    reset_in: float = 3600.0  # seconds from now until the limit resets
    message: str = ""


Action = Shell | Tool | Reply | Fail
ScriptFor = Callable[[str], Sequence[Action]]


@dataclass(frozen=True)
class ToolCall:
    """One tool_use of the assistant and, when the request carries it, its tool_result."""

    id: str
    name: str
    input: Mapping[str, Any]
    result: str | None  # the result's text; None when no result came back yet
    is_error: bool


@dataclass(frozen=True)
class Conversation:
    """An Anthropic Messages request read as a conversation: the CLI resends all of it every time."""

    body: Mapping[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [m for m in self.body.get("messages") or [] if isinstance(m, dict)]

    def user_texts(self) -> list[str]:
        """Every text block of the user messages, in order (tool results left out)."""
        return self.texts("user")

    def texts(self, role: str) -> list[str]:
        """Every text block of the messages of one role. Claude Code also sends `system` messages
        inside `messages` (the skill and agent listings)."""
        out = []
        for message in self.messages:
            if message.get("role") != role:
                continue
            content = message.get("content")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                out += [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
        return out

    def calls(self) -> list[ToolCall]:
        """The assistant's tool calls in order, each with its result when the request has it."""
        results: dict[str, tuple[str, bool]] = {}
        for message in self.messages:
            content = message.get("content")
            if message.get("role") != "user" or not isinstance(content, list):
                continue
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    results[str(block.get("tool_use_id"))] = (
                        _texts(block.get("content")),
                        bool(block.get("is_error")),
                    )
        calls = []
        for message in self.messages:
            content = message.get("content")
            if message.get("role") != "assistant" or not isinstance(content, list):
                continue
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    result = results.get(str(block.get("id")))
                    calls.append(
                        ToolCall(
                            id=str(block.get("id")),
                            name=str(block.get("name")),
                            input=block.get("input") or {},
                            result=None if result is None else result[0],
                            is_error=bool(result and result[1]),
                        )
                    )
        return calls


ConverseFor = Callable[[Conversation], "Shell | Tool | Reply | Fail | None"]


@dataclass(frozen=True)
class SessionContext:
    """The `## Session context` lines of a samocode prompt, as key -> value."""

    fields: Mapping[str, str]

    @property
    def session_dir(self) -> Path | None:
        value = self.fields.get("Session Dir")
        return Path(value) if value else None

    @property
    def working_dir(self) -> Path | None:
        value = self.fields.get("Working Dir")
        return Path(value) if value else None

    @property
    def phase(self) -> str | None:
        return self.fields.get("Phase")


_CONTEXT_LINE = re.compile(r"^- ([A-Za-z][A-Za-z ]*?):\s*(.*?)\s*$")


def parse_session_context(text: str) -> SessionContext:
    """Read the `- Key: value` lines under the last `## Session context` heading (empty if none)."""
    start = text.rfind("## Session context")
    if start < 0:
        return SessionContext({})
    fields: dict[str, str] = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        match = _CONTEXT_LINE.match(line)
        if match:
            fields.setdefault(match.group(1), match.group(2))
    return SessionContext(fields)


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it, and what it did with it."""

    method: str
    path: str
    protocol: str  # "anthropic" | "openai" | "other"
    main: bool  # the conversation (it offers tools) rather than a side request
    model: str
    stream: bool
    step: int  # tool results already in the request
    outcome: str  # what was answered, e.g. "shell", "reply", "fail:rate_limit", "side"
    headers: Mapping[str, str]
    body: Any  # the parsed JSON body (None for bodiless requests)
    at: float

    def tool_names(self) -> list[str]:
        tools = (self.body or {}).get("tools") or []
        return [t.get("name", "") for t in tools if isinstance(t, dict)]

    def system_text(self) -> str:
        """Anthropic `system` (string or text blocks) or OpenAI `instructions`."""
        body = self.body or {}
        system = body.get("system", body.get("instructions", ""))
        return system if isinstance(system, str) else _texts(system)

    def user_text(self) -> str:
        return _user_text(self.body or {})

    def line(self) -> str:
        where = f"{self.method} {self.path} model={self.model} stream={self.stream}"
        return f"{where} step={self.step} -> {self.outcome}"


def _texts(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    out = []
    for block in blocks or []:
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            out.append(block["text"])
    return "\n".join(out)


def _user_text(body: Mapping[str, Any]) -> str:
    """The text of the user messages (Anthropic `messages`, OpenAI `input`), tool results left out."""
    parts: list[str] = []
    for message in body.get("messages") or body.get("input") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            parts.append(_texts(message.get("content")))
    if isinstance(body.get("input"), str):
        parts.append(body["input"])
    return "\n".join(p for p in parts if p)


def _tool_results(body: Mapping[str, Any]) -> int:
    count = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            count += sum(1 for b in content if isinstance(b, dict) and b.get("type") == "tool_result")
    items = body.get("input")
    if isinstance(items, list):
        count += sum(1 for i in items if isinstance(i, dict) and i.get("type") == "function_call_output")
    return count


def _steps(script: Sequence[Action]) -> list[tuple[list[tuple[int, Fail]], Shell | Tool | Reply | None]]:
    """Group a script into steps: the Fails that precede each non-Fail action, and that action."""
    steps: list[tuple[list[tuple[int, Fail]], Shell | Tool | Reply | None]] = []
    fails: list[tuple[int, Fail]] = []
    for index, action in enumerate(script):
        if isinstance(action, Fail):
            fails.append((index, action))
        else:
            steps.append((fails, action))
            fails = []
    if fails:
        steps.append((fails, None))
    return steps


def _estimate_tokens(raw: bytes) -> int:
    return max(1, len(raw) // 4)


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class ModelServer:
    """Scripted Anthropic + OpenAI model server on 127.0.0.1:<free port>; a context manager."""

    def __init__(
        self,
        script: ScriptFor | Sequence[Action] = (),
        *,
        unified_reset_in: float = 5 * 3600,
        converse: ConverseFor | None = None,
        unified_windows: Mapping[str, float] | None = None,
        unified_status: str = "allowed",
        unified_warn_at: float = 0.9,
    ):
        self.script = script
        self.converse = converse
        self.unified_reset_in = unified_reset_in
        # Per-window utilization sent with every successful answer ({"5h": 0.97, "7d": 0.4}); a test may
        # change it between requests. `unified_status` is the overall status (allowed | allowed_warning).
        self.unified_windows = dict(unified_windows or {})
        self.unified_status = unified_status
        self.unified_warn_at = unified_warn_at
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._fail_counts: dict[tuple[int, int, str], int] = {}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ModelServer:
        server = self

        class Handler(_Handler):
            owner = server

        httpd = _QuietServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name="model-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake hung handlers and close every open connection."""
        self._stopping.set()
        if self._httpd is None:
            return
        self._httpd.shutdown()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- inspection ------------------------------------------------------------------------------
    def main_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.main]

    def describe(self) -> str:
        """Every request seen, one line each: for assertion messages."""
        with self._lock:
            return "\n".join(r.line() for r in self.requests) or "(no requests)"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._fail_counts.clear()

    # --- decisions (called from handler threads) ---------------------------------------------------
    def _script_for(self, text: str) -> Sequence[Action]:
        return self.script(text) if callable(self.script) else self.script

    def _decide(self, body: Mapping[str, Any]) -> tuple[int, Shell | Tool | Reply | Fail]:
        step = _tool_results(body)
        if self.converse is not None:
            chosen = self.converse(Conversation(body))
            if chosen is not None:
                return step, chosen
        steps = _steps(self._script_for(_user_text(body)))
        if step >= len(steps):
            return step, Reply("(script exhausted)")
        fails, action = steps[step]
        with self._lock:
            for index, fail in fails:
                key = (step, index, repr(fail))
                used = self._fail_counts.get(key, 0)
                if fail.times is None or used < fail.times:
                    self._fail_counts[key] = used + 1
                    return step, fail
        return step, action if action is not None else Reply("(script exhausted)")

    def _record(
        self, handler: _Handler, protocol: str, main: bool, body: Any, step: int, outcome: str
    ) -> None:
        body_map = body if isinstance(body, dict) else {}
        entry = Recorded(
            method=handler.command,
            path=handler.path,
            protocol=protocol,
            main=main,
            model=str(body_map.get("model", "")),
            stream=bool(body_map.get("stream", False)),
            step=step,
            outcome=outcome,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            at=time.time(),
        )
        with self._lock:
            self.requests.append(entry)

    def _next_id(self) -> int:
        return next(self._ids)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A CLI that gives up on a hung or stalled call resets the connection: expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: ModelServer
    protocol_version = "HTTP/1.1"  # keep-alive, chunked SSE: what the CLIs' HTTP clients expect

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._sockets.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._sockets.discard(self.connection)
        with contextlib.suppress(OSError):  # the client went away first
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in owner.requests instead

    # --- plumbing ----------------------------------------------------------------------------------
    def _read_body(self) -> tuple[bytes, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return raw, json.loads(raw) if raw else None
        except ValueError:
            return raw, None

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _start_sse(self, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_sse(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _block(self) -> None:
        """Say nothing more until the server stops; then drop the connection."""
        self.owner._stopping.wait()
        self.close_connection = True

    # --- verbs -------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.owner._record(self, "other", False, None, 0, "head")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.owner._record(self, "other", False, None, 0, "404")
        self._send_json(404, {"error": {"type": "not_found", "message": f"no {self.path} here"}})

    def do_POST(self) -> None:
        raw, body = self._read_body()
        path = urlsplit(self.path).path
        if path.endswith("/v1/messages") and isinstance(body, dict):
            _Anthropic(self, raw, body).serve()
        elif path.endswith("/v1/responses") and isinstance(body, dict):
            _OpenAI(self, raw, body).serve()
        elif path.endswith("/v1/messages/count_tokens") and isinstance(body, dict):
            self.owner._record(self, "anthropic", False, body, 0, "count_tokens")
            self._send_json(200, {"input_tokens": _estimate_tokens(raw)})
        else:
            self.owner._record(self, "other", False, body, 0, "404")
            self._send_json(404, {"error": {"type": "not_found", "message": f"no {self.path} here"}})


class _Anthropic:
    """One Messages API request."""

    def __init__(self, handler: _Handler, raw: bytes, body: dict[str, Any]):
        self.h = handler
        self.owner = handler.owner
        self.raw = raw
        self.body = body
        self.model = str(body.get("model") or "claude-test")
        self.stream = bool(body.get("stream"))

    def serve(self) -> None:
        # Side requests (title, quota check, ...) offer no tools; answer them briefly and never fail them.
        if not self.body.get("tools"):
            self.owner._record(self.h, "anthropic", False, self.body, 0, "side")
            self._message([{"type": "text", "text": "ok"}], "end_turn")
            return
        step, action = self.owner._decide(self.body)
        outcome = f"fail:{action.kind.value}" if isinstance(action, Fail) else type(action).__name__.lower()
        self.owner._record(self.h, "anthropic", True, self.body, step, outcome)
        if isinstance(action, Fail):
            self._fail(action)
        elif isinstance(action, Reply):
            self._message([{"type": "text", "text": action.text}], "end_turn")
        else:
            name, args = (
                ("Bash", {"command": action.command})
                if isinstance(action, Shell)
                else (
                    action.name,
                    dict(action.input),
                )
            )
            block = {
                "type": "tool_use",
                "id": f"toolu_{self.owner._next_id():06d}",
                "name": name,
                "input": args,
            }
            self._message([block], "tool_use")

    def _usage(self, content: list[dict[str, Any]]) -> dict[str, int]:
        out = sum(len(json.dumps(b)) for b in content) // 4 + 5
        return {
            "input_tokens": _estimate_tokens(self.raw),
            "output_tokens": out,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }

    def _unified_allowed(self) -> dict[str, str]:
        reset = int(time.time() + self.owner.unified_reset_in)
        headers = {
            "anthropic-ratelimit-unified-status": self.owner.unified_status,
            "anthropic-ratelimit-unified-reset": str(reset),
            "anthropic-ratelimit-unified-representative-claim": "five_hour",
            "request-id": f"req_{self.owner._next_id():06d}",
        }
        for window, used in (self.owner.unified_windows or {}).items():  # e.g. {"5h": 0.97}
            headers[f"anthropic-ratelimit-unified-{window}-utilization"] = str(used)
            headers[f"anthropic-ratelimit-unified-{window}-reset"] = str(reset)
            headers[f"anthropic-ratelimit-unified-{window}-status"] = "allowed"
            if used >= self.owner.unified_warn_at:
                # The early warning: 2.1.197 reports a window's utilization only with this header.
                headers[f"anthropic-ratelimit-unified-{window}-surpassed-threshold"] = str(
                    self.owner.unified_warn_at
                )
        return headers

    def _message(self, content: list[dict[str, Any]], stop_reason: str) -> None:
        msg_id = f"msg_{self.owner._next_id():06d}"
        usage = self._usage(content)
        if not self.stream:
            message = {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage,
            }
            self.h._send_json(200, message, self._unified_allowed())
            return
        self.h._start_sse(self._unified_allowed())
        for event, data in self._events(msg_id, content, stop_reason, usage):
            self.h._chunk(_sse(event, data))
        self.h._end_sse()

    def _start_events(self, msg_id: str, usage: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
        start_usage = {**usage, "output_tokens": 1}
        message = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _events(
        self, msg_id: str, content: list[dict[str, Any]], stop_reason: str, usage: dict[str, int]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from self._start_events(msg_id, usage)
        for index, block in enumerate(content):
            if block["type"] == "text":
                yield (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                delta = {"type": "text_delta", "text": block["text"]}
            else:
                yield (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {**block, "input": {}},
                    },
                )
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield "message_stop", {"type": "message_stop"}

    def _fail(self, fail: Fail) -> None:
        kind = fail.kind
        if kind is FailKind.HANG:
            self.h._block()
            return
        if kind in (FailKind.STALL, FailKind.STREAM_ERROR) and self.stream:
            self.h._start_sse()
            msg_id = f"msg_{self.owner._next_id():06d}"
            events = [
                *self._start_events(msg_id, self._usage([])),
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": "Let"},
                    },
                ),
            ]
            for event, data in events:
                self.h._chunk(_sse(event, data))
            if kind is FailKind.STALL:
                self.h._block()
                return
            error = {"type": "overloaded_error", "message": fail.message or "Overloaded"}
            self.h._chunk(_sse("error", {"type": "error", "error": error}))
            self.h._end_sse()
            return
        if kind is FailKind.STALL:  # the non-streaming fallback of a stalled call: no answer at all
            self.h._block()
            return
        status, error_type, message, headers = self._error(fail)
        body = {"type": "error", "error": {"type": error_type, "message": fail.message or message}}
        self.h._send_json(status, body, {"request-id": f"req_{self.owner._next_id():06d}", **headers})

    def _error(self, fail: Fail) -> tuple[int, str, str, dict[str, str]]:
        now = time.time()
        reset = int(now + fail.reset_in)
        if fail.kind is FailKind.RATE_LIMIT:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reset))
            return (
                429,
                "rate_limit_error",
                "Number of requests has exceeded your rate limit",
                {
                    "retry-after": str(max(0, round(fail.retry_after))),
                    "anthropic-ratelimit-requests-limit": "50",
                    "anthropic-ratelimit-requests-remaining": "0",
                    "anthropic-ratelimit-requests-reset": stamp,
                },
            )
        if fail.kind in (FailKind.UNIFIED_REJECTED, FailKind.USAGE_LIMIT):
            return (
                429,
                "rate_limit_error",
                "This request would exceed your account's rate limit. Please try again later.",
                {
                    "anthropic-ratelimit-unified-status": "rejected",
                    "anthropic-ratelimit-unified-reset": str(reset),
                    "anthropic-ratelimit-unified-representative-claim": "five_hour",
                    "anthropic-ratelimit-unified-5h-status": "rejected",
                    "anthropic-ratelimit-unified-5h-reset": str(reset),
                    "anthropic-ratelimit-unified-5h-utilization": "1.0",
                    "anthropic-ratelimit-unified-overage-status": "rejected",
                    "anthropic-ratelimit-unified-overage-disabled-reason": "org_level_disabled",
                },
            )
        if fail.kind is FailKind.OVERLOADED:
            return 529, "overloaded_error", "Overloaded", {}
        if fail.kind is FailKind.UNAUTHORIZED:
            return 401, "authentication_error", "invalid x-api-key", {}
        return 500, "api_error", "Internal server error", {}  # SERVER_ERROR, STREAM_ERROR (non-streaming)


class _OpenAI:
    """One Responses API request (Codex always streams)."""

    def __init__(self, handler: _Handler, raw: bytes, body: dict[str, Any]):
        self.h = handler
        self.owner = handler.owner
        self.raw = raw
        self.body = body
        self.model = str(body.get("model") or "gpt-test")

    def serve(self) -> None:
        if not self.body.get("tools"):
            self.owner._record(self.h, "openai", False, self.body, 0, "side")
            self._respond(self._message_item("ok"))
            return
        step, action = self.owner._decide(self.body)
        outcome = f"fail:{action.kind.value}" if isinstance(action, Fail) else type(action).__name__.lower()
        self.owner._record(self.h, "openai", True, self.body, step, outcome)
        if isinstance(action, Fail):
            self._fail(action)
        elif isinstance(action, Reply):
            self._respond(self._message_item(action.text))
        else:
            name, args = (
                ("exec_command", {"cmd": action.command})
                if isinstance(action, Shell)
                else (action.name, action.input)
            )
            n = self.owner._next_id()
            item = {
                "type": "function_call",
                "id": f"fc_{n:06d}",
                "call_id": f"call_{n:06d}",
                "name": name,
                "arguments": json.dumps(dict(args)),
                "status": "completed",
            }
            self._respond(item)

    def _message_item(self, text: str) -> dict[str, Any]:
        return {
            "type": "message",
            "id": f"msg_{self.owner._next_id():06d}",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }

    def _response(self, resp_id: str, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": resp_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": self.model,
            "output": output,
        }

    def _opening(self, resp_id: str, item: dict[str, Any]) -> list[bytes]:
        added = {**item, "status": "in_progress"}
        if item["type"] == "message":
            added["content"] = []
        else:
            added["arguments"] = ""
        return [
            _sse(
                "response.created",
                {"type": "response.created", "response": self._response(resp_id, "in_progress", [])},
            ),
            _sse(
                "response.output_item.added",
                {"type": "response.output_item.added", "output_index": 0, "item": added},
            ),
        ]

    def _respond(self, item: dict[str, Any]) -> None:
        resp_id = f"resp_{self.owner._next_id():06d}"
        self.h._start_sse({"x-request-id": resp_id})
        chunks = self._opening(resp_id, item)
        if item["type"] == "message":
            text = item["content"][0]["text"]
            delta = {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": text,
            }
            chunks.append(_sse("response.output_text.delta", delta))
        chunks.append(
            _sse(
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": 0, "item": item},
            )
        )
        completed = self._response(resp_id, "completed", [item])
        out_tokens = len(json.dumps(item)) // 4 + 5
        completed["usage"] = {
            "input_tokens": _estimate_tokens(self.raw),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": _estimate_tokens(self.raw) + out_tokens,
        }
        chunks.append(_sse("response.completed", {"type": "response.completed", "response": completed}))
        for chunk in chunks:
            self.h._chunk(chunk)
        self.h._end_sse()

    def _fail(self, fail: Fail) -> None:
        kind = fail.kind
        if kind is FailKind.HANG:
            self.h._block()
            return
        if kind in (FailKind.STALL, FailKind.STREAM_ERROR):
            resp_id = f"resp_{self.owner._next_id():06d}"
            item = self._message_item("Let")
            self.h._start_sse({"x-request-id": resp_id})
            for chunk in self._opening(resp_id, item):
                self.h._chunk(chunk)
            delta = {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": "Let",
            }
            self.h._chunk(_sse("response.output_text.delta", delta))
            if kind is FailKind.STALL:
                self.h._block()
                return
            failed = self._response(resp_id, "failed", [])
            failed["error"] = {"code": "server_error", "message": fail.message or "The model failed"}
            self.h._chunk(_sse("response.failed", {"type": "response.failed", "response": failed}))
            self.h._end_sse()
            return
        reset_in = max(0, int(fail.reset_in))
        headers = {"x-request-id": f"req_{self.owner._next_id():06d}"}
        if kind is FailKind.RATE_LIMIT:
            headers["retry-after"] = str(max(0, round(fail.retry_after)))
            headers["x-ratelimit-reset-requests"] = f"{reset_in}s"
            error = {
                "type": "requests",
                "code": "rate_limit_exceeded",
                "message": "Rate limit reached for requests",
            }
            status = 429
        elif kind in (FailKind.USAGE_LIMIT, FailKind.UNIFIED_REJECTED):
            error = {
                "type": "usage_limit_reached",
                "message": "The usage limit has been reached",
                "plan_type": "plus",
                "resets_at": int(time.time()) + reset_in,
                "resets_in_seconds": reset_in,
            }
            status = 429
        elif kind is FailKind.OVERLOADED:
            error = {
                "type": "server_overloaded",
                "code": "server_overloaded",
                "message": "Service Unavailable",
            }
            status = 503
        elif kind is FailKind.UNAUTHORIZED:
            error = {
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "message": "Incorrect API key provided",
            }
            status = 401
        else:
            error = {"type": "server_error", "code": "server_error", "message": "Internal server error"}
            status = 500
        if fail.message:
            error["message"] = fail.message
        self.h._send_json(status, {"error": error}, headers)
