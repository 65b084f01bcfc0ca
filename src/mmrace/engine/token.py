"""Replay tokens: one short printable string that reproduces an execution.

Layout: ``mmr<format>-<base32 payload>``. The payload is a CRC-16 of the rest,
then a length-prefixed context string (a higher layer's note of what ran, such
as a scenario name and variant; empty for plain engine programs), then the
decision list as varints. Only decisions with more than one option are
stored, so forced steps cost nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib

TOKEN_FORMAT = 1
_PREFIX = "mmr"
_SHAPE = re.compile(r"^mmr(\d+)-([a-z2-7]+)$")


class TokenError(ValueError):
    """A token that cannot be used: wrong format version, corrupted, or not
    matching the program it is replayed on."""


def _varint(n: int, out: bytearray) -> None:
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise TokenError("token is corrupted (truncated)")


def encode(decisions: list[int], context: str = "") -> str:
    body = bytearray()
    ctx = context.encode("utf-8")
    _varint(len(ctx), body)
    body += ctx
    for d in decisions:
        _varint(d, body)
    crc = zlib.crc32(bytes(body)) & 0xFFFF
    raw = crc.to_bytes(2, "big") + bytes(body)
    text = base64.b32encode(raw).decode("ascii").rstrip("=").lower()
    return f"{_PREFIX}{TOKEN_FORMAT}-{text}"


def decode(token: str) -> tuple[list[int], str]:
    """Return (decisions, context); raise TokenError on a bad token."""
    token = token.strip()
    m = _SHAPE.match(token)
    if not m:
        raise TokenError(
            f"not a replay token: {token[:40]!r} (expected mmr{TOKEN_FORMAT}-...)"
        )
    version = m.group(1).lstrip("0") or "0"
    if version != str(TOKEN_FORMAT):
        # Compared as text: a hand-edited field of thousands of digits is
        # just another unknown format (int() would refuse it).
        shown = version if len(version) <= 6 else f"{version[:6]}... ({len(version)} digits)"
        raise TokenError(
            f"token is in format {shown}, but this mmrace reads format {TOKEN_FORMAT}; "
            "replay it with the mmrace version that produced it"
        )
    text = m.group(2).upper()
    text += "=" * (-len(text) % 8)
    try:
        raw = base64.b32decode(text)
    except (binascii.Error, ValueError):
        raise TokenError("token is corrupted (bad encoding)") from None
    if len(raw) < 3:
        raise TokenError("token is corrupted (too short)")
    body = raw[2:]
    if zlib.crc32(body) & 0xFFFF != int.from_bytes(raw[:2], "big"):
        raise TokenError("token is corrupted (checksum mismatch)")
    n, pos = _read_varint(body, 0)
    ctx_bytes = body[pos : pos + n]
    if len(ctx_bytes) != n:
        raise TokenError("token is corrupted (truncated context)")
    try:
        context = ctx_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError("token is corrupted (bad context)") from None
    pos += n
    decisions: list[int] = []
    while pos < len(body):
        d, pos = _read_varint(body, pos)
        decisions.append(d)
    return decisions, context
