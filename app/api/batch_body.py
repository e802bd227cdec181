"""The body of `POST …/scheduled_batches`, read as a stream: a 100,000-call batch is never held whole.

`spool_body` writes the body to a `BatchBody` as it arrives (in memory up to SPOOL_MEMORY_BYTES, on disk
beyond), within the route's body limit and read timeout (`body_limit`). It is then parsed with ijson twice:
`BatchBody.scan` reads the top-level fields other than `calls` (which may come after it) and the shape of
`calls` (how many, which are not objects) without building it; `BatchBody.calls` yields the calls one at a
time. `SpecSpool` keeps the validated calls until they are stored. Every step hands the event loop back
every SLICE_S, so the media of live calls goes on while a large batch is checked.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import ijson
import orjson
from starlette.requests import Request

from app.errors import InvalidInput

log = logging.getLogger(__name__)

#: A body (or its validated calls) is kept in memory up to this size, in a temporary file beyond.
SPOOL_MEMORY_BYTES = 2**20
#: What ijson reads and parses in one C call: small enough that one parse step is well under a millisecond.
PARSE_BUFFER_BYTES = 16 * 2**10
#: The longest the body's checks hold the event loop before yielding (a media frame is 20 ms).
SLICE_S = 0.002
#: How many parse events run between two looks at the clock.
_EVENTS_PER_CLOCK_CHECK = 256
#: Non-object calls remembered: an error names at most five problems (`describe_validation_error`).
_NOT_OBJECTS_KEPT = 5

_OPENS = frozenset({"start_map", "start_array"})
_CLOSES = frozenset({"end_map", "end_array"})

if ijson.backend != "yajl2_c":  # ijson falls back by itself: the batch bodies are parsed, only slower
    log.warning("ijson's C backend (yajl2_c) is unavailable: large batches parse with %s", ijson.backend)


class _Slices:
    """Time on the event loop, in slices of SLICE_S: `pause` yields once the current one is used up."""

    def __init__(self) -> None:
        self._ends = time.perf_counter() + SLICE_S

    async def pause(self) -> None:
        if time.perf_counter() >= self._ends:
            await asyncio.sleep(0)
            self._ends = time.perf_counter() + SLICE_S


def _invalid_json(exc: Exception, where: str) -> InvalidInput:
    """invalid_json with the parser's reason: yajl's first line, without the excerpt of the body after it."""
    reason = exc.args[0] if exc.args else exc
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    first_line = str(reason).strip().split("\n", 1)[0].rstrip(".")
    return InvalidInput("invalid_json", f"request body is not valid JSON{where}: {first_line}")


@dataclass
class BodyScan:
    """What the first pass learnt: the fields beside `calls`, and the shape of the (last) `calls` given."""

    fields: dict[str, Any] = field(default_factory=dict)
    #: `calls` is given (as anything).
    has_calls: bool = False
    #: The last `calls` given is a list (the last one counts, as with orjson's duplicate keys).
    calls_is_list: bool = False
    #: How many items that list has.
    count: int = 0
    #: The first _NOT_OBJECTS_KEPT indices of its items that are not objects.
    not_objects: list[int] = field(default_factory=list)
    #: Values an earlier `calls` key left at ijson's `calls.item` prefix (skipped by the second pass).
    skip: int = 0

    def create_input(self) -> dict[str, Any]:
        """The body for validating `ScheduledBatchCreate`, `calls` stood in by a list of the same shape.

        Every object call is `{}` (each is validated on its own later), so only the first one and those
        before a non-object call are needed for the same errors (`no_calls`, `calls.7: Input should be a
        valid dictionary`).
        """
        data = dict(self.fields)
        if not self.has_calls:
            return data
        if not self.calls_is_list:
            data["calls"] = None  # "Input should be a valid list", whatever it was
            return data
        length = max(self.not_objects) + 1 if self.not_objects else min(self.count, 1)
        stand_in: list[dict[str, Any] | None] = [{}] * length
        for index in self.not_objects:
            stand_in[index] = None
        data["calls"] = stand_in
        return data


class BatchBody:
    """A batch-creation body, spooled; read with `scan` first, then `calls`. Close it when done."""

    def __init__(self, file: IO[bytes], blank: bool) -> None:
        self._file = file
        #: Nothing but whitespace arrived: the body is `{}`, as for every other route.
        self.blank = blank

    def close(self) -> None:
        self._file.close()

    def _events(self) -> Iterator[tuple[str, Any]]:
        self._file.seek(0)
        return ijson.basic_parse(self._file, buf_size=PARSE_BUFFER_BYTES, use_float=True)

    async def scan(self) -> BodyScan:
        """The first pass over the whole body: 400 `invalid_json` if it is not JSON or not an object."""
        scan = BodyScan()
        if self.blank:
            return scan
        try:
            events = self._events()
            first, _ = next(events)
            if first != "start_map":
                await self._drain(events)  # a body that is not JSON at all says so, as before
                raise InvalidInput("invalid_json", "request body must be a JSON object")
            await self._scan_object(events, scan)
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            if scan.has_calls and scan.calls_is_list and scan.count:
                raise _invalid_json(exc, f" (in or after calls.{scan.count - 1})") from None
            raise _invalid_json(exc, "") from None
        return scan

    @staticmethod
    async def _drain(events: Iterator[tuple[str, Any]]) -> None:
        slices = _Slices()
        for seen, _ in enumerate(events):
            if seen % _EVENTS_PER_CLOCK_CHECK == 0:
                await slices.pause()

    @staticmethod
    async def _scan_object(events: Iterator[tuple[str, Any]], scan: BodyScan) -> None:
        """The top-level object after its `start_map`: fields built, `calls` only counted."""
        slices = _Slices()
        depth = 1  # inside the top-level object
        key: str | None = None
        in_calls = False
        builder = ijson.ObjectBuilder()
        for seen, (event, value) in enumerate(events):
            if seen % _EVENTS_PER_CLOCK_CHECK == 0:
                await slices.pause()
            # `at` is how deep the event stands: the top-level object's keys and values are at 1.
            if event in _OPENS:
                at = depth
                depth += 1
            elif event in _CLOSES:
                depth -= 1
                at = depth
            else:
                at = depth
            if in_calls:
                if at > 2:
                    continue
                if at == 2:  # an item of `calls` begins (or ends)
                    if scan.calls_is_list and event not in _CLOSES:
                        if event != "start_map" and len(scan.not_objects) < _NOT_OBJECTS_KEPT:
                            scan.not_objects.append(scan.count)
                        scan.count += 1
                    elif not scan.calls_is_list and event == "map_key" and value == "item":
                        scan.skip += 1  # `"calls": {"item": …}` is at ijson's `calls.item` too
                    continue
                if at == 1 and event not in _CLOSES:
                    scan.calls_is_list = event == "start_array"
                    if not scan.calls_is_list and event != "start_map":
                        in_calls = False  # a scalar: done
                    continue
                if at == 1:
                    in_calls = False
                    continue
            if at == 0:  # the top-level object ends
                continue
            if at == 1 and event == "map_key":
                key = value
                if key == "calls":
                    if scan.calls_is_list:
                        scan.skip += scan.count  # an earlier `calls` list: the last one counts
                    scan.has_calls, in_calls = True, True
                    scan.calls_is_list, scan.count, scan.not_objects = False, 0, []
                else:
                    builder = ijson.ObjectBuilder()
                continue
            builder.event(event, value)
            if at == 1 and event not in _OPENS:  # the field's value is complete
                scan.fields[str(key)] = builder.value

    async def calls(self, scan: BodyScan) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """The second pass: each call of the last `calls` list with its index, in order.

        Call only after `scan` found the body valid and every call an object. The time the caller spends
        on each call counts in the slice too, so it should be short.
        """
        self._file.seek(0)
        items = ijson.items(self._file, "calls.item", buf_size=PARSE_BUFFER_BYTES, use_float=True)
        slices = _Slices()
        for position, raw in enumerate(items):
            if position >= scan.skip:
                yield position - scan.skip, raw
            await slices.pause()


async def spool_body(request: Request) -> BatchBody:
    """The request's body spooled as it arrives; BodyTooLarge / BodyReadTimeout (`body_limit`) as before."""
    # The spool's writes go to the page cache (tens of µs for a 64 KiB piece): not worth a thread each.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 (BatchBody closes it)
    blank = True
    try:
        async for chunk in request.stream():
            spool.write(chunk)
            blank = blank and not chunk.strip()
    except BaseException:
        spool.close()
        raise
    return BatchBody(spool, blank)


class SpecSpool:
    """Validated calls (as stored) kept until they are stored: one JSON line each, spooled like the body.

    Iterating reads them back in order, one at a time. Close it when done.
    """

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def append(self, spec: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(spec) + b"\n")
        self.count += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._file.seek(0)
        for line in self._file:
            yield orjson.loads(line)

    def close(self) -> None:
        self._file.close()
