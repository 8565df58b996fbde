"""Reading input in pieces: how large a piece is, how much input is read at
most by default, and bytes to text as they come: in which encoding (a byte
order mark says, else UTF-8), and whether they are text at all (no NUL,
nothing undecodable), decided for each piece as it arrives, not once the whole
input is in memory."""

from __future__ import annotations

import codecs

from chatllm.errors import InputError

# How much is read at a time: large enough that reading costs nothing next to
# the work on it, small enough that a refusal comes at once.
PIECE_BYTES = 64 * 1024

# The input a command reads at most, unless --max-input-size or the
# max_input_size setting raises it. 16 MiB is five copies of War and Peace and
# ~4 million tokens: more than a local model works through in a day (the
# embedded 135M model prefills ~470 tokens/s on two cores, a 1.5B one ~40),
# while reading it stays well under 200 MB of memory. Without a bound,
# `chatllm summarize < /dev/zero` took gigabytes in seconds.
DEFAULT_MAX_INPUT_SIZE = 16 * 1024 * 1024

# Byte order marks, the codec that reads past each, and its name for errors.
# UTF-32 LE's comes before UTF-16 LE's, which begins it.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


class TextDecoder:
    """Decodes one input piece by piece; raises InputError, naming `source`,
    at the first piece that is not text."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._head = b""  # the first bytes, until they tell a byte order mark from text
        self._decoder: codecs.IncrementalDecoder | None = None
        self._encoding = "UTF-8"
        self._offset = 0  # bytes decoded so far, for the position in an error

    def decode(self, data: bytes, final: bool = False) -> str:
        if self._decoder is None:
            self._head += data
            if not final and any(len(self._head) < len(bom) and bom.startswith(self._head) for bom, _, _ in _BOMS):
                return ""
            data, self._head = self._head, b""
            codec, self._encoding = next(
                ((codec, name) for bom, codec, name in _BOMS if data.startswith(bom)), ("utf-8", "UTF-8")
            )
            self._decoder = codecs.getincrementaldecoder(codec)("strict")
        held = len(self._decoder.getstate()[0])  # bytes of a character begun in the last piece
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as error:
            position = self._offset - held + error.start
            raise InputError(
                f"{self.source} is not {self._encoding} text (invalid byte at position {position})"
            ) from None
        self._offset += len(data)
        if "\x00" in text:
            raise InputError(f"{self.source} looks like a binary file, not text (it holds a NUL byte)")
        return text
