"""Log lines as data: the ``key=value`` fields of a rendered message, and logfmt rendering.

Call sites log plain ``%``-style messages whose trailing part is ``key=value`` pairs
(``"task stream opened agent_id=%s level=%s"``). :func:`split_fields` takes such a rendered
message apart into its event text and its fields, so the JSON formatter can give every field
its own key and the kv formatter can write real logfmt. Pure functions: no I/O, no logging.

Parsing rules, chosen for the messages ioswarm writes:

* the event is the text before the first ``key=`` token (``key`` is ``[A-Za-z_][\\w.]*``);
* a value runs to the next ``key=`` token that starts after whitespace outside quotes and
  brackets, so ``reason=nothing to send`` keeps its spaces and ``error=Err('a=b c')`` stays one
  value;
* a value token ending in ``:`` or ``;`` before further words ends the value there (the
  punctuation dropped); the words after it go to the ``detail`` field
  (``height=5: reason`` gives ``height=5`` and ``detail="reason"``);
* a value wholly wrapped in one kind of quote (a ``%r`` of a string) is unquoted;
* a decimal integer value becomes an ``int``, every other value stays a ``str``.
"""

from __future__ import annotations

import re

DETAIL_KEY = "detail"
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)=")
_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_OPEN = {"(": ")", "[": "]", "{": "}"}
_LOGFMT_BARE = re.compile(r"[^\s\"=\\]+")

Value = str | int


def _tokens(text: str) -> list[str]:
    """Whitespace-separated tokens; whitespace inside quotes or brackets does not split."""
    out: list[str] = []
    cur: list[str] = []
    closers: list[str] = []
    quote = ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch.isspace() and not closers:
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
        if ch in "'\"" and (len(cur) == 1 or cur[-2] in "=([{ ,:"):
            quote = ch
        elif ch in _OPEN:
            closers.append(_OPEN[ch])
        elif closers and ch == closers[-1]:
            closers.pop()
    if cur:
        out.append("".join(cur))
    return out


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _typed(value: str) -> Value:
    return int(value) if _INT.fullmatch(value) else _unquote(value)


def split_fields(message: str) -> tuple[str, dict[str, Value]]:
    """(event, fields) of a rendered log message; see the module docstring for the rules.

    A key given twice keeps its last value. A message without ``key=`` tokens is all event.
    """
    tokens = _tokens(message)
    event: list[str] = []
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    detail: list[str] = []
    closed = False  # the current value ended at ':' or ';'
    for token in tokens:
        m = _KEY.match(token)
        if m is not None:
            current = [token[m.end() :]]
            fields[m.group(1)] = current
            closed = False
        elif current is None:
            event.append(token)
        elif closed:
            detail.append(token)
        elif len(current) == 1 and current[0][-1:] in (":", ";") and len(current[0]) > 1:
            current[0] = current[0][:-1]
            closed = True
            detail.append(token)
        else:
            current.append(token)
    out: dict[str, Value] = {key: _typed(" ".join(parts)) for key, parts in fields.items()}
    if detail:
        out.setdefault(DETAIL_KEY, " ".join(detail))
    return " ".join(event), out


def merge_fields(
    base: dict[str, Value], fields: dict[str, Value], suffix: str = "_"
) -> dict[str, Value]:
    """``base`` (the line's own keys: ts, level, logger, msg) then ``fields``; a field whose
    name is taken by ``base`` is written as ``name`` + ``suffix`` instead of replacing it."""
    out = dict(base)
    for key, value in fields.items():
        name = key
        while name in base:
            name += suffix
        out[name] = value
    return out


def logfmt_value(value: Value) -> str:
    """A logfmt value: bare when it has no space, quote, ``=`` or backslash, else quoted."""
    text = str(value)
    if text and _LOGFMT_BARE.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def logfmt(pairs: dict[str, Value]) -> str:
    """One logfmt line (``k=v k="v w"``) of ``pairs`` in their order."""
    return " ".join(f"{key}={logfmt_value(value)}" for key, value in pairs.items())
