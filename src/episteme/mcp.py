"""The MCP server: the ledger's tools for agents, over stdio and streamable HTTP at ``/mcp``.

Every tool is one call into `Ledger`, like a CLI command or an API route. Who is acting
always comes from a bearer token, never from an argument: over HTTP the `_Bearer`
wrapper authenticates each request and puts the `Principal` in the request's scope
state; over stdio the token in ``EPISTEME_TOKEN`` is authenticated at startup (the
server does not start without a valid one) and again on each call.
Each tool names the `Op` it performs; a principal whose roles do not allow it is
refused, and the refusal is recorded (`Ledger.deny`). Library errors reach the model
as tool errors carrying their message, which says what to do.

Tools are plain functions: the SDK runs them on worker threads, where SQLite calls
belong (the store keeps a connection per thread).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import inspect
import io
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Self, TypeVar, cast

import anyio.to_thread
import orjson
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    CallToolResult,
    ErrorData,
    InputRequiredResult,
    JSONRPCError,
    JSONRPCNotification,
    ToolAnnotations,
    jsonrpc_message_adapter,
)
from mcp.types import Tool as MCPTool
from pydantic import BaseModel, Field, JsonValue, ValidationError
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from whenever import Instant

from episteme import __version__, logs
from episteme.api.deps import MCP_PATH, jsonrpc_refusal
from episteme.api.problems import invalid_detail
from episteme.api.schemas import Name, Prefix, Subject, Tag
from episteme.api.settings import MiB
from episteme.errors import (
    TOKEN_PREFIX,
    EpistemeError,
    Forbidden,
    InvalidInput,
    Unauthenticated,
    UserError,
    hide_secrets,
    hide_tokens,
)
from episteme.ledger.access import Op, Principal, TokenRefused
from episteme.ledger.constraints import MAX_TAGS
from episteme.ledger.core import Ledger
from episteme.ledger.learning import MAX_ITEM, MAX_ITEMS, MAX_PLAN, MAX_SCOPE
from episteme.ledger.model import (
    Answer,
    ConflictNote,
    Hidden,
    Kind,
    Lifecycle,
    dump,
    parse_assertion,
)
from episteme.text import quoted
from episteme.timeutil import parse_time, rfc3339

if TYPE_CHECKING:
    from mcp.shared._stream_protocols import ReadStream, WriteStream

    from episteme.api.metrics import Metrics

TOKEN_ENV = "EPISTEME_TOKEN"
PATH = MCP_PATH
LOOPBACK = ("127.0.0.1", "localhost", "::1")

INSTRUCTIONS = """\
Episteme is the team's audited memory of infrastructure: facts and decisions, who
asserted them, and whether a person has approved them. Every read you make is recorded
and answered with a query_id receipt.

Before acting on a fact, read it with query_knowledge. Choose the lens on purpose:
- approved (the default): only values a supervisor approved. Act on these.
- latest: the newest value whatever its lifecycle, unreviewed proposals included. Never
  act on a value whose lifecycle is "proposed": a production outage happened when a
  deploy agent read a proposed ES256 JWT configuration through latest and deployed it.
  Use latest only to see what is pending, and say that it is unreviewed.
- consensus: proposed and approved values ranked by confidence x the asserting agent's
  trust. Use it to weigh conflicting evidence, not as permission to act.
- all: everything, rejected and superseded history included. Use it to investigate.
Every answer says what the lens hid (summary, hidden). When something was hidden,
mention it instead of assuming there is nothing else.

Before you change anything, call check_constraints with your plan in words, the
subjects it touches and the kind of action it is (tags: deploy, npm, db-migration). If
it reports a violation, do not go ahead: use the preferred alternative it names, or ask
a person.

After you act, call record_decision with what you did and the query_ids of the reads
you relied on. Citing them lets the on-call person trace the action back to the facts,
agents and sources behind it, and find everything affected when a fact is corrected.

Record what you learn with add_assertion. It is stored as proposed until a supervisor
approves it; give an honest confidence, a source and evidence.

To investigate: get_history shows who introduced an assertion and every change since;
trace_decision follows a decision or query id back to assertions, agents and sources.
You always act as the principal of your token; you cannot act as anyone else.
"""

Ctx = Context[Any, Request]
"""The tool context; its request is the HTTP request (None over stdio)."""

_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


class Shown(BaseModel):
    """One assertion an answer showed."""

    id: str = Field(description="assertion id: cite it, or pass it to get_history")
    subject: str
    value: JsonValue
    lifecycle: Lifecycle = Field(description="act only on approved values")
    confidence: float
    score: float | None = Field(None, description="confidence x trust, when the lens ranks")
    valid_from: str | None = Field(
        None, description="when it starts to hold in the world, RFC 3339 (None: always)"
    )
    valid_to: str | None = Field(
        None, description="when it stops holding, RFC 3339 (None: until further notice)"
    )


class Knowledge(BaseModel):
    """An answer trimmed to what a model needs."""

    query_id: str | None = Field(
        description="the audit receipt: cite it in record_decision (None: an unaudited view)"
    )
    lens: str
    as_of: str = Field(description="the time the answer describes, RFC 3339")
    summary: str = Field(description="what the lens hid, in words")
    items: list[Shown]
    hidden: Hidden
    conflicts: list[ConflictNote] = Field(
        default_factory=list,
        description="subjects with two approved values at once: do not act on either"
        " before a person settles it",
    )


def knowledge(ans: Answer) -> Knowledge:
    """The trimmed form of an answer, for a model."""
    items = [
        Shown(
            id=i.assertion.id,
            subject=i.assertion.subject,
            value=i.assertion.value,
            lifecycle=i.assertion.lifecycle,
            confidence=i.assertion.confidence,
            score=i.score,
            valid_from=_opt_time(i.assertion.valid_from),
            valid_to=_opt_time(i.assertion.valid_to),
        )
        for i in ans.items
    ]
    return Knowledge(
        query_id=ans.query_id,
        lens=ans.lens,
        as_of=rfc3339(ans.as_of or ans.asked_at),
        summary=ans.summary,
        items=items,
        hidden=ans.hidden,
        conflicts=ans.conflicts,
    )


def _opt_time(instant: Instant | None) -> str | None:
    return None if instant is None else rfc3339(instant)


def _when(text: str | None, now: Instant, field: str) -> Instant | None:
    """The time a tool's argument `field` gives, or a refusal that names it."""
    if text is None:
        return None
    try:
        return parse_time(text, now)
    except InvalidInput as exc:
        raise InvalidInput(f"{field}: {exc.message}", field=field) from None


@contextlib.contextmanager
def _reported(error: type[Exception] = ToolError) -> Iterator[None]:
    """Turn a library error into the SDK error the model reads, keeping its message."""
    try:
        yield
    except EpistemeError as exc:
        raise error(exc.message) from exc


_Tool = TypeVar("_Tool", bound=Callable[..., Any])

_CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("episteme_mcp_caller")
"""The principal of the tool call under way, authorized before its arguments were read
(the worker thread a tool runs on gets a copy of the context)."""


def _size(arguments: dict[str, Any]) -> int:
    """The arguments' size as JSON. orjson refuses an integer past 64 bits, which the
    tool's own checks name better (`value: integers must fit in 64 bits`): such a value
    is measured as Python writes it, and one Python will not write either (over 4,300
    digits) is left to those checks too."""
    try:
        return len(orjson.dumps(arguments))
    except orjson.JSONEncodeError:
        try:
            return len(json.dumps(arguments))
        except (TypeError, ValueError):
            return 0


class _Server(MCPServer):
    """The SDK's server, with tool descriptions dedented; each call's token judged before
    its arguments, as the API judges it before a body; arguments a tool does not take
    refused, as the API refuses an unknown field (the SDK drops them, so a misspelt
    `item` checked a plan against nothing); and arguments that fail the input schema
    answered in the API's words (the SDK sends pydantic's whole report, with a link and
    the input)."""

    def __init__(
        self,
        *args: Any,
        authorize: Callable[[str, Context[Any, Any] | None], Principal],
        max_body: int | None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self._authorize = authorize
        self._max_body = max_body
        self._takes: dict[str, list[str]] = {}

    def add_tool(  # type: ignore[override]  # the rest passes through by name
        self, fn: Callable[..., Any], name: str | None = None, **rest: Any
    ) -> None:
        # a docstring's description without the indentation it has in the source
        if rest.get("description") is None:
            rest["description"] = inspect.cleandoc(fn.__doc__ or "")
        self._takes[name or fn.__name__] = list(inspect.signature(fn).parameters)
        super().add_tool(fn, name, **rest)

    async def list_tools(self) -> list[MCPTool]:
        # no argument but those named: what call_tool enforces, said in the schema
        return [
            t.model_copy(update={"input_schema": {**t.input_schema, "additionalProperties": False}})
            for t in await super().list_tools()
        ]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        takes = self._takes.get(name)
        if takes is None:
            raise ToolError(
                f"Error executing tool {quoted(hide_secrets(name))}: no such tool; this server"
                f" has {', '.join(self._takes)}"
            )
        try:
            who = await anyio.to_thread.run_sync(self._authorize, name, context)  # a read
        except ToolError as exc:
            raise ToolError(f"Error executing tool {name}: {exc}") from None
        # over stdio (no body: a line is as long as sent); over HTTP the body was measured
        size = 0 if self._max_body is None else _size(arguments)
        if self._max_body is not None and size > self._max_body:
            raise ToolError(
                f"Error executing tool {name}: the arguments are {size:,} bytes, over"
                f" {self._max_body:,}: send less, or raise EPISTEME_MAX_BODY on the server"
            )
        unknown = [key for key in arguments if key not in takes]
        if unknown:
            raise ToolError(
                f"Error executing tool {name}: unknown argument {quoted(hide_secrets(unknown[0]))}:"
                f" {name} takes {', '.join(takes)}"
            )
        reset = _CALLER.set(who)
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if not isinstance(exc.__cause__, ValidationError):
                raise
            detail = invalid_detail(exc.__cause__.errors())[2]
            raise ToolError(f"Error executing tool {name}: {detail}") from None
        finally:
            _CALLER.reset(reset)

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Any = None
    ) -> Any:
        # this server has no prompts: an unknown name is the caller's mistake, answered as
        # one (the SDK answers code 0 and logs a traceback with the name each time)
        raise MCPError(
            code=INVALID_PARAMS,
            message=f"no prompt named {quoted(hide_secrets(name))}: this server has no prompts;"
            " its tools and resources are listed by tools/list and resources/list",
        )

    async def read_resource(self, uri: Any, context: Any = None) -> Any:
        try:
            return await super().read_resource(uri, context)
        except ResourceNotFoundError:  # the SDK's repeats the URI whole, twice
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"no resource {quoted(hide_secrets(str(uri)))}: this server has"
                " episteme://subjects/{subject} and episteme://lenses",
            ) from None

    async def run_stdio_async(self) -> None:
        # the SDK's, with stdin read by `_Lines`, every message masked on its way out
        # (`_Masked`) and a line that is no message answered (`_Answering`)
        low = self._lowlevel_server
        lines = _Lines(sys.stdin.buffer)
        # `_Lines` does what the SDK's stdin does (`async for line in stdin`) and no more
        async with stdio_server(stdin=cast("anyio.AsyncFile[str]", lines)) as (read, write):
            out = _Masked(write)
            answering = _Answering(read, out, lines.read)
            await low.run(answering, out, low.create_initialization_options())


class _UnownedText(io.TextIOWrapper):
    """A text layer over a buffer that is not its own to close (stdin's)."""

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.detach()


class _Lines:
    """stdin, a line at a time, each line also kept for `_Answering` (the SDK reads one
    message, or one error, from each line, in order). Bytes that are not UTF-8 are kept
    as they came (as surrogates) so that the line is refused: the SDK's own reading put
    U+FFFD in their place, and the value was recorded altered."""

    def __init__(self, binary: BinaryIO) -> None:
        text = _UnownedText(binary, encoding="utf-8", errors="surrogateescape")
        self._file = anyio.wrap_file(text)
        self.read: collections.deque[str] = collections.deque()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        line = await self._file.readline()
        if not line:
            raise StopAsyncIteration
        self.read.append(line)
        return line


class _Through:
    """A stream of the SDK's wrapped: what it does not change passes through."""

    _stream: Any

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> Self:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        result: bool | None = await self._stream.__aexit__(*exc)
        return result


class _Answering(_Through):
    """The stdio server's way in, answering a line that is not a JSON-RPC message as
    JSON-RPC 2.0 asks (-32700 for a line that is not JSON, -32600 for one that is no
    request, with its id where it has a readable one): the SDK dropped such a line, and
    a client waiting for its answer waited for ever. Over HTTP the SDK answers them.
    `lines`: the lines read, in order, one for each item of `stream`."""

    def __init__(
        self,
        stream: ReadStream[SessionMessage | Exception],
        out: _Masked,
        lines: collections.deque[str],
    ) -> None:
        self._stream, self._out, self._lines = stream, out, lines

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        return await self._answered(self._stream.__anext__)

    async def receive(self) -> SessionMessage | Exception:
        return await self._answered(self._stream.receive)

    async def _answered(
        self, get: Callable[[], Awaitable[SessionMessage | Exception]]
    ) -> SessionMessage | Exception:
        """The next message, each line that was none before it answered."""
        while True:
            item = await get()
            line = self._lines.popleft() if self._lines else ""
            if isinstance(item, ValidationError):
                refusal: JSONRPCError | None = _refusal(item, line)
            elif isinstance(item, SessionMessage):
                refusal = _with_bad_id(item, line)
            else:
                refusal = None
            if refusal is None:
                return item
            await self._out.send(SessionMessage(refusal))


def _error(ident: object, code: int, message: str) -> JSONRPCError:
    """An error answer, to `ident` when it is a readable id (a string or an integer)."""
    rid = ident if isinstance(ident, str) or type(ident) is int else None
    return JSONRPCError(jsonrpc="2.0", id=rid, error=ErrorData(code=code, message=message))


def _leniently(line: str) -> object:
    """`line` as JSON, read as far as Python's reader goes (which takes what pydantic's
    does not: nesting past 200 levels, numbers past 64 bits, a lone surrogate's
    escape); `_NOT_JSON` when it is not JSON even so."""
    text = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        return json.loads(text, parse_int=_integer)
    except RecursionError:  # JSON still, nested past what Python reads
        return _TOO_DEEP
    except ValueError:
        return _NOT_JSON


_NOT_JSON = object()
_TOO_DEEP = object()
_TOO_LONG = object()
"""An integer longer than Python reads (4,300 digits): no id, and answered to none."""


def _integer(digits: str) -> object:
    """An integer as JSON writes it; `_TOO_LONG` for one longer than Python reads."""
    return int(digits) if len(digits) < 4300 else _TOO_LONG


def _refusal(exc: ValidationError, line: str) -> JSONRPCError:
    """The answer to a line the SDK could not read as a message."""
    errors = exc.errors()
    kind = errors[0]["type"] if errors else ""
    found = _leniently(line) if kind in ("json_invalid", "string_unicode") else _NOT_JSON
    ident = found.get("id") if isinstance(found, dict) else None
    if isinstance(ident, str) and "\ufffd" in ident:  # read through a byte that is not
        ident = None  # UTF-8: not the id the client sent
    if kind == "string_unicode":
        raw = line.encode("utf-8", "surrogateescape")
        try:
            raw.decode("utf-8")
            at = ""
        except UnicodeDecodeError as bad:
            at = f" (byte {bad.start + 1})"
        return _error(ident, PARSE_ERROR, f"Parse error: the line is not UTF-8{at}: JSON is")
    if kind == "json_invalid":
        said = str(errors[0].get("msg", "")).removeprefix("Invalid JSON: ")
        if found is _NOT_JSON:
            return _error(None, PARSE_ERROR, f"Parse error: the line is not JSON ({said})")
        return _error(
            ident,
            INVALID_REQUEST,
            f"the message is JSON, but JSON this server cannot read: {said}",
        )
    given: dict[str, Any] = next(
        (e["input"] for e in errors if isinstance(e.get("input"), dict)), {}
    )
    return _error(given.get("id"), INVALID_REQUEST, NOT_JSONRPC_LINE)


def _with_bad_id(item: SessionMessage, line: str) -> JSONRPCError | None:
    """The refusal of a line the SDK read as a notification though it has an id."""
    if type(item.message) is not JSONRPCNotification:
        return None
    why = _bad_id(line.encode("utf-8", "surrogateescape"))
    return None if why is None else _error(None, INVALID_REQUEST, why)


def _bad_id(raw: bytes) -> str | None:
    """What is wrong with the id of the message `raw`, a notification to the SDK: one
    that is neither a string nor an integer (1.5, null, true, an object) made a request
    a notification, which has no answer, and its client waited for one for ever. None
    when it has no id (a notification indeed)."""
    if b'"id"' not in raw:
        return None
    try:
        given = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(given, dict) or "id" not in given:
        return None
    ident = given["id"]
    if isinstance(ident, dict | list):
        shown = "an object" if isinstance(ident, dict) else "an array"
    else:  # as JSON writes it: null, true, 1.5
        shown = "the id " + orjson.dumps(ident).decode()[:60]
    return (
        f"{shown} is neither a string nor an integer: a request's id is one of"
        " those, and a notification has none"
    )


class _Masked(_Through):
    """The stdio server's way out, masking any whole bearer token in a message: the
    SDK's errors quote what the client sent (an unknown method's or prompt's name), and
    what is pasted in the wrong place may be someone's secret. Over HTTP, `_Replies`
    does the same to each reply."""

    def __init__(self, stream: WriteStream[SessionMessage]) -> None:
        self._stream = stream

    async def send(self, item: SessionMessage, /) -> None:
        text = item.message.model_dump_json(by_alias=True, exclude_unset=True)
        said = hide_tokens(text)  # first: a token cut in two is no longer found whole
        if isinstance(item.message, JSONRPCError) and len(said) > _LONG_ERROR:
            said = _bounded_error(said.encode()).decode()
        if said != text:
            message = jsonrpc_message_adapter.validate_json(said, by_name=False)
            item = SessionMessage(message, metadata=item.metadata)
        await self._stream.send(item)


_LONG_ERROR = 1000
"""An error answer longer than this (in bytes of JSON) may quote what it was sent whole."""


def _bounded_error(reply: bytes) -> bytes:
    """An error answer whose message or data quote a long value (an unknown method's
    name, in the SDK's "Method not found") with that value cut to its start and its
    length, as our own errors quote one."""
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        answer = orjson.loads(reply)
        error = answer["error"]
        for key in ("message", "data"):
            if isinstance(error.get(key), str) and len(error[key]) > 200:
                error[key] = quoted(error[key], 120)
        return orjson.dumps(answer)
    return reply


def build_server(
    ledger: Ledger,
    metrics: Metrics | None = None,
    *,
    token: str | None = None,
    max_body: int | None = None,
) -> MCPServer:
    """The MCP server over `ledger`.

    Args:
        ledger: the ledger every tool calls.
        metrics: counts answers and refusals when given (the HTTP server's).
        token: the caller's bearer token over stdio. None for HTTP, where each request
            carries its own and `_Bearer` authenticates it.
        max_body: the largest arguments a call may send, in bytes (EPISTEME_MAX_BODY),
            measured here over stdio; None over HTTP, where the body limit measured them.
    """
    # A plain handler unless the application gave the root logger one: the SDK otherwise
    # installs rich's, which renders each logged traceback with its source, on the event
    # loop (11-130 ms for a short one, 0.2-0.5 ms plain), and no other request is
    # answered meanwhile. Either way its records are masked (an unknown prompt's name).
    logs.install(logs.PLAIN)
    ops: dict[str, Op] = {}  # what each tool does, for its authorization

    def authorize(name: str, context: Context[Any, Any] | None) -> Principal:
        return caller(context, ops[name], name)

    server = _Server(
        "episteme",
        instructions=INSTRUCTIONS,
        version=__version__,
        log_level="WARNING",
        authorize=authorize,
        max_body=max_body,
    )

    def tool(op: Op, annotations: ToolAnnotations) -> Callable[[_Tool], _Tool]:
        def register(fn: _Tool) -> _Tool:
            ops[fn.__name__] = op
            return server.tool(annotations=annotations)(fn)

        return register

    def caller(
        ctx: Context[Any, Any] | None, op: Op, target: str, error: type[Exception] = ToolError
    ) -> Principal:
        request = None
        if ctx is not None:
            with contextlib.suppress(ValueError):  # no request under way: none to read
                request = ctx.request_context.request
        who = None if request is None else request.scope.get("state", {}).get("principal")
        return allowed(who, op, target, error)

    def allowed(who: object, op: Op, target: str, error: type[Exception]) -> Principal:
        """`who` (over HTTP; over stdio, the token's principal now) if it may do `op`."""
        if who is None and token is not None:
            who = stdio_principal(target, error)
        if not isinstance(who, Principal):
            raise error("unauthenticated: connect with a bearer token from `episteme token create`")
        if not who.allows(op):
            try:
                who.require(op)
            except Forbidden as exc:
                ledger.deny(who.name, who.token_id, str(op), f"mcp:{target}", exc.message)
                raise error(exc.message) from None
        return who

    def stdio_principal(target: str, error: type[Exception]) -> Principal:
        # Checked on every call (one indexed read), so that revoking the token stops
        # a long-running stdio server at its next call, not at its next start.
        try:
            return ledger.authenticate(token)
        except TokenRefused as exc:
            ledger.deny(exc.principal, exc.token_id, "authenticate", f"mcp:{target}", exc.message)
            raise error(exc.message) from None
        except Unauthenticated as exc:
            raise error(exc.message) from None

    @tool(Op.ASSERT, _WRITES)
    def add_assertion(
        subject: Annotated[Subject, Field(description="dotted subject, e.g. auth.jwt.algorithm")],
        value: Annotated[JsonValue, Field(description="the value: any JSON (string, number…)")],
        confidence: Annotated[
            float, Field(description="how sure you are, from 0 to 1", ge=0.0, le=1.0, strict=True)
        ] = 1.0,
        kind: Annotated[
            Kind,
            Field(description="fact or decision (one value per subject), observation, constraint"),
        ] = Kind.FACT,
        source: Annotated[
            str | None,
            Field(description="where it came from: a URI, file or system", max_length=2048),
        ] = None,
        evidence: Annotated[
            str | None,
            Field(description="why you believe it: output, quote, measurement", max_length=65536),
        ] = None,
        epoch: Annotated[
            Name | None, Field(description="batch name when recording many from one document")
        ] = None,
        derived_from: Annotated[
            list[str] | None,
            Field(description="ids of the assertions this was derived from", max_length=1000),
        ] = None,
        valid_from: Annotated[
            str | None,
            Field(
                description="when it starts to hold in the world, if not always: RFC 3339"
                " (2026-11-21T21:00:00Z) or '6h ago'",
                max_length=64,
            ),
        ] = None,
        valid_to: Annotated[
            str | None,
            Field(
                description="when it stops holding (a maintenance window's end, a"
                " certificate's expiry): RFC 3339 or 'in 2h'",
                max_length=64,
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Record something you learned, as a proposal under your own name.

        It is stored with lifecycle "proposed": the approved lens does not show it until
        a supervisor approves it. Returns the assertion with its id.
        """
        who = _CALLER.get()
        with _reported():
            now = ledger.clock.now()
            fields = {
                "subject": subject,
                "value": value,
                "agent": who.name,
                "confidence": confidence,
                "kind": kind,
                "source": source,
                "evidence": evidence,
                "epoch": epoch,
                "derived_from": tuple(derived_from or ()),
                "valid_from": _when(valid_from, now, "valid_from"),
                "valid_to": _when(valid_to, now, "valid_to"),
            }
            added = ledger.add([parse_assertion(fields)], actor=who.name)[0]
        return dict(dump(added))

    @tool(Op.QUERY, _READ_ONLY)
    def query_knowledge(
        subject: Annotated[
            Prefix | None,
            Field(description="a subject, or a prefix covering everything below it (auth.jwt)"),
        ] = None,
        text: Annotated[
            str | None,
            Field(
                description="words to search for in subjects, values and sources", max_length=1024
            ),
        ] = None,
        lens: Annotated[
            Name,
            Field(description="approved (default; act on these), latest, consensus, all or custom"),
        ] = "approved",
        at: Annotated[
            str | None,
            Field(
                description="read as of this time: RFC 3339 (2026-11-21T21:00:00Z) or '6h ago'",
                max_length=64,
            ),
        ] = None,
        context: Annotated[
            dict[str, JsonValue] | None,
            Field(description="your task or ticket, kept with the audit record"),
        ] = None,
    ) -> Knowledge:
        """Read what the ledger holds about a subject (or search by text) through a lens.

        Returns the values with their lifecycle and confidence, what the lens hid, and a
        query_id receipt to cite in record_decision. Give a subject, text or both.
        """
        who = _CALLER.get()
        with _reported():
            when = _when(at, ledger.clock.now(), "at")
            ans = ledger.query(
                subject, agent=who.name, lens=lens, at=when, text=text, context=context
            )
        if metrics is not None:
            metrics.answered(ans)
        return knowledge(ans)

    @tool(Op.DECIDE, _WRITES)
    def record_decision(
        action: Annotated[
            str,
            Field(
                description="what you did, e.g. 'deployed auth config v42'",
                min_length=1,
                max_length=4096,
            ),
        ],
        query_ids: Annotated[
            list[str],
            Field(description="the query_id of every read this action relied on", max_length=1000),
        ],
        context: Annotated[
            dict[str, JsonValue] | None,
            Field(description="your task or ticket, kept with the decision"),
        ] = None,
    ) -> dict[str, Any]:
        """Record an action you took and the reads (query ids) it relied on.

        Call it after acting. Cite your own reads; a read another agent made and handed
        to you (a planner's) may be cited too, and the trace names who made each. Returns
        the decision with its id (d_…), which the on-call person traces back to the
        facts, agents and sources behind it.
        """
        who = _CALLER.get()
        with _reported():
            done = ledger.decide(action, agent=who.name, query_ids=query_ids, context=context)
        return dict(dump(done))

    @tool(Op.READ, _READ_ONLY)
    def get_history(
        ref: Annotated[
            str,
            Field(description="an assertion id (or unique prefix), or a subject", max_length=255),
        ],
    ) -> dict[str, Any]:
        """Who introduced an assertion, from which source and batch, and every change since.

        With a subject, the history of each assertion on it. Each entry lists the
        lifecycle moves with who made them and why, and any corrections.
        """
        with _reported():
            found = ledger.blame(ref)
        return {"history": dump(found)}

    @tool(Op.READ, _READ_ONLY)
    def trace_decision(
        ref: Annotated[
            str, Field(description="a decision id (d_…) or a query id (q_…)", max_length=128)
        ],
    ) -> dict[str, Any]:
        """Follow a decision or a query back to what it rested on.

        Returns the decision, the queries it cited, the assertions they served, the
        agents, sources and batches (epochs) behind those assertions, and the pre-flight
        checks the deciding agent made in the hour before it (checks).
        """
        with _reported():
            found = ledger.trace(ref)
        return dict(dump(found))

    @tool(Op.CHECK, _WRITES)
    def check_constraints(
        plan: Annotated[
            str,
            Field(
                description="what you are about to do, in words, with names and values"
                " (may be left out when items names what it uses)",
                max_length=MAX_PLAN,
            ),
        ] = "",
        subjects: Annotated[
            list[Subject] | None,
            Field(
                description="the full subjects the plan changes (auth.jwt.algorithm): "
                "constraints on them, above or below them apply; left out, the plan is "
                "checked against every constraint on any subject",
                max_length=MAX_SCOPE,
            ),
        ] = None,
        items: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=MAX_ITEM)]] | None,
            Field(
                description="identifiers the plan uses exactly as written: package names "
                "(node-fetch), file paths, image tags",
                max_length=MAX_ITEMS,
            ),
        ] = None,
        tags: Annotated[
            list[Tag] | None,
            Field(
                description="the kinds of action the plan is (deploy, npm, db-migration, "
                "terraform): constraints on those kinds apply; left out, the plan is checked "
                "against every constraint on any kind",
                max_length=MAX_TAGS,
            ),
        ] = None,
        context: Annotated[
            dict[str, JsonValue] | None,
            Field(description="your task or ticket, kept with the check"),
        ] = None,
    ) -> dict[str, Any]:
        """Check a plan against the ledger's negative constraints before you act.

        A constraint records what must not be done on a subject (usually after a
        correction) or in a kind of action (its tags: deploy, npm), and the alternative
        to use. Returns each violation with the reason, the preferred alternative,
        where the constraint came from and how strong it still is; a "warning" is a
        dormant constraint (not hit for months): weigh it, but it does not block. The
        check is recorded under its check_id, which the on-call person can look up.
        """
        who = _CALLER.get()
        with _reported():
            result = ledger.check(
                plan,
                subjects or [],
                agent=who.name,
                items=items or [],
                tags=tags or [],
                context=context,
            )
        violations = [
            {
                "severity": v.severity,
                "message": v.message,
                "matched": v.matched,
                "found_in": v.found_in,
                "scope": v.constraint.scope,
                "tags": v.constraint.tags,
                "prefer": v.constraint.prefer,
                "reason": v.constraint.reason,
                "origin": v.constraint.origin,
                "strength": v.strength,
                "constraint_id": v.constraint.id,
            }
            for v in result.violations
        ]
        if not result.ok:
            found = " ".join(v.message for v in result.violations)
            summary = f"{len(violations)} violation(s): do not go ahead as planned. {found}"
        elif violations:
            found = " ".join(v.message for v in result.violations)
            summary = f"only dormant constraints match (warnings): {found}"
        elif result.checked:
            summary = f"no constraint violated: {result.checked} in scope, none matches the plan"
        else:
            summary = "no constraint applies: none is recorded in scope of this plan"
        return {
            "ok": result.ok,
            "check_id": result.check_id,
            "checked": result.checked,
            "tags": result.tags,
            "summary": summary,
            "violations": violations,
        }

    @server.resource(
        "episteme://subjects/{subject}",
        mime_type="application/json",
        description="The approved view of a subject and everything below it (not audited).",
    )
    def subject_view(subject: str, ctx: Ctx) -> dict[str, Any]:
        caller(ctx, Op.READ, f"episteme://subjects/{subject}", ResourceError)
        try:
            ans = ledger.answer(subject, lens="approved")
        except UserError as exc:  # the caller's mistake (a subject that cannot be one)
            raise MCPError(code=INVALID_PARAMS, message=exc.message) from None
        except EpistemeError as exc:
            raise ResourceError(exc.message) from exc
        return knowledge(ans).model_dump(mode="json")

    @server.resource(
        "episteme://lenses",
        mime_type="application/json",
        description="The lenses a query can use: built-in and custom, with what each shows.",
    )
    def lenses() -> dict[str, Any]:
        # A static resource gets no context: over HTTP the request was authenticated
        # before it got here; over stdio the token is checked now, as for every call.
        if token is not None:
            allowed(None, Op.READ, "episteme://lenses", ResourceError)
        return {name: spec.model_dump(mode="json") for name, spec in ledger.lenses().items()}

    return server


# -- HTTP ------------------------------------------------------------------------------


def _security(host: str) -> TransportSecuritySettings:
    """DNS-rebinding checks: on for a loopback bind, off for any other.

    A server bound to loopback is what a browser page could reach through a rebound
    name, so only loopback Host and Origin headers are accepted (any port, or none).
    A server bound to another address (0.0.0.0 behind a proxy, a public name) is
    reached under names this process cannot know; there the bearer token, which a
    browser page does not hold, is the protection.
    """
    if host not in LOOPBACK:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = ["127.0.0.1", "localhost", "[::1]"]
    hosts = [h for n in names for h in (n, f"{n}:*")]
    origins = [f"{s}://{h}" for s in ("http", "https") for h in hosts]
    return TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins)


class _Bearer:
    """Authenticates each MCP request; 401 with a JSON-RPC error without a valid token."""

    def __init__(self, app: ASGIApp, ledger: Ledger, metrics: Metrics | None) -> None:
        self.app = app
        self.ledger = ledger
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, secret = header.partition(" ")
        try:
            # One indexed read: inline on a local store, on a thread on a remote one (as in
            # the API's deps)
            given = secret.strip() if scheme.lower() == "bearer" else None
            if self.ledger.store.remote:
                who = await anyio.to_thread.run_sync(self.ledger.authenticate, given)
            else:
                who = self.ledger.authenticate(given)
        except Unauthenticated as exc:
            if self.metrics is not None and not isinstance(exc, TokenRefused):
                self.metrics.denied.labels("401").inc()  # a refused token's is in `deny`
            if isinstance(exc, TokenRefused):
                target = f"{scope['method']} {scope['path']}"
                deny = self.ledger.deny
                await anyio.to_thread.run_sync(
                    deny, exc.principal, exc.token_id, "authenticate", target, exc.message
                )
            refused = jsonrpc_refusal(exc.status, exc.message, {"WWW-Authenticate": "Bearer"})
            await refused(scope, receive, send)
            return
        if scope["method"] != "POST":
            # Stateless JSON mode: no event stream to open (a GET would hang), no session
            # to delete. Every exchange is one POST.
            detail = f"{scope['method']} is not allowed on /mcp: MCP clients POST their messages"
            await jsonrpc_refusal(405, detail, {"Allow": "POST"})(scope, receive, send)
            return
        scope["state"] = {**scope.get("state", {}), "principal": who}
        kept = _Kept(receive)
        await self.app(scope, kept, _Replies(self, scope, kept, send, who))


class _Kept:
    """A request's `receive` that keeps the body as the app reads it: looked at again
    only when the SDK answers 202, a notification's answer (see `_bad_id`)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.body = bytearray()

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.body += message.get("body", b"")
        return message


_PREFIX = TOKEN_PREFIX.encode()

_WHY = {
    421: "this server is bound to a loopback address: it answers requests to 127.0.0.1, "
    "localhost or [::1] only (a name that points here from elsewhere is refused)",
    403: "a page of another origin may not call this server (DNS-rebinding protection); "
    "MCP clients send no Origin, or a loopback one",
}


class _Replies:
    """What the SDK sends back over HTTP, on its way out. Its own refusals of a request
    (a Host or an Origin its DNS-rebinding check does not take: plain text) go as
    JSON-RPC errors, as every refusal at /mcp; a 403 is counted and recorded as every
    refusal is. And a whole bearer token in a reply is masked, as `_Masked` does over stdio:
    the SDK quotes what it was sent (an unknown method's name, a body that is not
    JSON-RPC, in pydantic's report). In JSON mode a reply is one body, held with its
    start so that Content-Length can follow the masking. A 202 (no answer: a
    notification) to a message that has an id is a request whose id the SDK could not
    take: refused (`_bad_id`)."""

    def __init__(
        self, bearer: _Bearer, scope: Scope, receive: _Kept, send: Send, who: Principal
    ) -> None:
        self.bearer, self.scope, self.receive, self.send, self.who = (
            bearer, scope, receive, send, who
        )  # fmt: skip
        self.status: int | None = None
        self.text = b""
        self.start: Message | None = None
        self.bad_id: str | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            plain = dict(message.get("headers", [])).get(b"content-type", b"")
            if message["status"] == 202:
                self.bad_id = _bad_id(bytes(self.receive.body))
            if message["status"] in _WHY and b"json" not in plain:
                self.status = message["status"]
            elif self.bad_id is None:
                self.start = message
            return
        if self.bad_id is not None:  # the SDK's empty 202 replaced by the refusal
            if not message.get("more_body", False):
                await jsonrpc_refusal(400, self.bad_id)(self.scope, self.receive, self.send)
            return
        if self.status is not None and message["type"] == "http.response.body":
            self.text += message.get("body", b"")
            if not message.get("more_body", False):
                await self._refuse()
            return
        if self.start is not None and message["type"] == "http.response.body":
            start, self.start = self.start, None
            body = message.get("body", b"")
            said = body if message.get("more_body", False) else _reworded(start["status"], body)
            if said != body:
                kept = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                length = (b"content-length", str(len(said)).encode())
                start = {**start, "headers": [*kept, length]}
                message = {**message, "body": said}
            await self.send(start)
        await self.send(message)

    async def _refuse(self) -> None:
        assert self.status is not None
        said = self.text.decode("utf-8", "replace").strip() or "refused"
        detail = f"{said}: {_WHY[self.status]}"
        if self.status == 403:
            ledger, who = self.bearer.ledger, self.who
            target = f"{self.scope['method']} {self.scope['path']}"
            await anyio.to_thread.run_sync(
                ledger.deny, who.name, who.token_id, "mcp", target, detail
            )
        await jsonrpc_refusal(self.status, detail)(self.scope, self.receive, self.send)


NOT_JSONRPC_LINE = (
    "the line is not a JSON-RPC 2.0 message: an MCP client writes one object a line, with"
    ' "jsonrpc": "2.0", a "method" and its "params", and an "id" for a request'
)
NOT_JSONRPC = (
    "the body is not a JSON-RPC 2.0 message: an MCP client POSTs an object with"
    ' "jsonrpc": "2.0", a "method" and its "params", and an "id" for a request'
)


def _reworded(status: int, body: bytes) -> bytes:
    """A reply of the SDK's as we say it: a body that is not JSON-RPC in one line (the
    SDK sends pydantic's report of up to a dozen errors, with links and part of the
    input), and any whole bearer token masked."""
    if status == 400 and b'"Validation error: ' in body:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            reply = orjson.loads(body)
            # the SDK's code is INVALID_PARAMS; JSON-RPC's for what is no request is this
            reply["error"] = {"code": INVALID_REQUEST, "message": NOT_JSONRPC}
            return orjson.dumps(reply)
    if _PREFIX in body:  # first: a token cut in two is no longer found whole
        body = hide_tokens(body.decode("utf-8", "replace")).encode()
    if len(body) > _LONG_ERROR and b'"error"' in body:
        body = _bounded_error(body)
    return body


@dataclass(frozen=True)
class Mount:
    """The MCP endpoint for an app: its route and the session manager to run."""

    route: BaseRoute
    server: MCPServer

    def run(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Run the session manager for the app's lifetime (mounted apps get no lifespan)."""
        return self.server.session_manager.run()


def mount(ledger: Ledger, metrics: Metrics | None, *, host: str = "127.0.0.1") -> Mount:
    """The MCP server at exactly ``/mcp``, behind bearer tokens.

    Stateless and with JSON responses, so that any worker behind a load balancer can
    answer any request. `host` is the address the server binds: it decides the
    DNS-rebinding checks (`_security`).
    """
    server = build_server(ledger, metrics)  # the app's body limit holds its calls
    app = server.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        json_response=True,
        transport_security=_security(host),
    )
    return Mount(route=Route(PATH, endpoint=_Bearer(app, ledger, metrics)), server=server)


# -- stdio -----------------------------------------------------------------------------


def serve_stdio(ledger: Ledger, token: str | None, *, max_body: int = MiB) -> None:
    """Serve MCP on stdin/stdout as the principal of `token`, until stdin closes.

    Raises:
        Unauthenticated: no token, or one that is unknown, revoked or expired (recorded).
    """
    token = (token or "").strip()  # as a header's value is read: `$(cat file)` ends in \n
    if not token:
        raise Unauthenticated(
            f"{TOKEN_ENV} is not set: give the MCP server a token from "
            "`episteme token create --name NAME --role agent`"
        )
    try:
        ledger.authenticate(token)
    except TokenRefused as exc:
        ledger.deny(exc.principal, exc.token_id, "authenticate", "mcp:stdio", exc.message)
        raise Unauthenticated(f"{TOKEN_ENV}: {exc.message}") from None
    except Unauthenticated as exc:
        raise Unauthenticated(f"{TOKEN_ENV}: {exc.message}") from None
    build_server(ledger, token=token, max_body=max_body).run("stdio")
