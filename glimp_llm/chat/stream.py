"""The one streaming hold-back: token texts in, text a user may see out.

The router cuts its final text before a caller's stop string and the chat layer parses tool calls out of
it at the end, so a stream must never have shown either:

* a stop string is never shown, not even in part: a tail that could be the start of one is held back until
  the next token decides (only that tail is re-scanned, not the whole text, per token);
* ``pause_markers`` (``<tool_call>``, a code fence): from the first one on nothing more is streamed; the
  rest of the visible content comes with the parsed answer;
* ``pause_on_leading_json``: an answer that opens with ``{`` or ``[`` may be a bare JSON call (or a list of
  them), so it is held back too.

:meth:`HoldBack.finish` reconciles with the authoritative final text: what was shown is always a prefix of
it, so the streamed pieces add up to exactly what the non-streamed call returns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from glimp_llm.engines.decoding import first_stop, partial_stop
from glimp_llm.trace import DoneEvent, RouterEvent, TokenEvent


class HoldBack:
    """Shows generated text as it comes, minus what a stop string or a tool call may turn out to be."""

    def __init__(
        self, stops: Sequence[str] = (), pause_markers: Sequence[str] = (), *, pause_on_leading_json: bool = False
    ) -> None:
        self._watch = tuple(s for s in (*stops, *pause_markers) if s)
        self._longest = max((len(s) for s in self._watch), default=0)
        self._json = pause_on_leading_json
        self._buffer = ""
        self._shown = 0
        self._paused = False

    @property
    def shown(self) -> str:
        """Everything shown so far."""
        return self._buffer[: self._shown]

    def push(self, text: str) -> str:
        """Add the next piece of generated text; return what may be shown now (possibly "")."""
        self._buffer += text
        if self._paused or not text:
            return ""
        buf = self._buffer
        if self._json:
            lead = buf.lstrip()
            if not lead:
                return ""  # only whitespace so far: it might still open a JSON object
            if lead.startswith(("{", "[")):
                self._paused = True
                return ""
            self._json = False
        hit = first_stop(buf, self._watch, max(0, self._shown - self._longest))
        if hit is not None:
            limit, self._paused = hit[0], True
        else:
            limit = len(buf) - partial_stop(buf, self._watch)
        while limit > self._shown and buf[limit - 1] == "\ufffd":  # half a multi-byte character
            limit -= 1
        if limit <= self._shown:
            return ""
        delta = buf[self._shown : limit]
        self._shown = limit
        return delta

    def finish(self, final_text: str) -> str:
        """The rest of ``final_text`` after what was already shown ("" if it does not extend it)."""
        shown = self.shown
        return final_text[len(shown) :] if final_text.startswith(shown) else ""


class StopFilter:
    """A routed stream's events as its caller may see them when the request has stop strings: token text is held
    back while it could begin a stop string and never sent from the first one on, so the token events add up to
    the result's text (the router cuts it before the stop string); step and done events pass as they are."""

    def __init__(self, stops: Sequence[str], put: Callable[[RouterEvent], None]) -> None:
        self._hold = HoldBack(stops)
        self._pending: deque[TokenEvent] = deque()  # events whose text is not all shown yet, in order
        self._put = put

    def __call__(self, event: RouterEvent) -> None:
        if isinstance(event, TokenEvent):
            self._pending.append(event)
            self._release(self._hold.push(event.text))
            return
        if isinstance(event, DoneEvent):
            self._release(self._hold.finish(event.result.text))
        self._put(event)

    def _release(self, text: str) -> None:
        """Send ``text``, the next characters that may be shown, as pieces of the token events they came from."""
        while text and self._pending:
            head = self._pending.popleft()
            n = min(len(text), len(head.text))
            self._put(head.model_copy(update={"text": head.text[:n]}))
            if n < len(head.text):
                self._pending.appendleft(head.model_copy(update={"text": head.text[n:]}))
            text = text[n:]
