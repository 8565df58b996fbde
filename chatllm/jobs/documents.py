"""The user's documents for `chatllm ask`: which files a path names, their text,
and their passages with the lines they come from.

A folder is walked for text (.txt), Markdown (.md, .markdown),
reStructuredText (.rst), HTML (.html, .htm) and PDF (.pdf); hidden files and
folders are skipped, and so is a file in a folder that cannot be read as text
(binary, not UTF-8), with a note. A file named on the command line is read
whatever its suffix, and one that cannot be read is an error.

Passages are sections (a heading and its text, Markdown's `#` and underlined
headings, reStructuredText's underlined and overlined ones) packed up to about
`PASSAGE_TOKENS` at paragraph boundaries, each with its first and last line,
which the answer cites. Tokens are estimated (a CJK character is about a
token, other text four characters a token), so passages do not depend on the
model and an index of them serves every model.

HTML and PDF are worth their cost: product manuals and exported wikis, the
documents people most want to ask about, come as PDF and HTML far more often
than as Markdown. HTML is read with the standard library's parser (headings
kept as headings, scripts and styles left out); PDF with pypdf (pure Python,
imported only when a PDF is met), page by page, and cited by page, since a
PDF's extracted text has no lines a reader could find.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from chatllm.errors import InputError
from chatllm.jobs.chunking import split_to_budget
from chatllm.jobs.knowledge import CJK
from chatllm.reading import TextDecoder

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIX = ".pdf"
DOCUMENT_SUFFIXES = (*TEXT_SUFFIXES, *HTML_SUFFIXES, PDF_SUFFIX)
# About the persona's passage size (jobs/knowledge.py): a section or a few
# paragraphs, small enough that several fit beside a question.
PASSAGE_TOKENS = 200

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
# An underline (or overline) of one punctuation character: Markdown's = and -,
# reStructuredText's adornments.
_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


@dataclass(frozen=True)
class Section:
    """A passage before it becomes a search result: its heading, its lines in
    the file (None where the file has no lines to cite: PDF, HTML) and text."""

    heading: str
    first: int | None
    last: int | None
    text: str


def estimate_tokens(text: str) -> int:
    cjk = sum(len(run) for run in CJK.findall(text))
    return cjk + (len(text) - cjk + 3) // 4


def walk(folder: Path) -> Iterator[Path]:
    """The document files under `folder`, in a stable order, hidden ones left out."""
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(DOCUMENT_SUFFIXES):
                yield Path(directory, name)


def document_text(path: Path, data: bytes) -> str:
    """The text of a document file whose bytes are `data`; InputError when it
    has none that can be read."""
    suffix = path.suffix.lower()
    if suffix == PDF_SUFFIX:
        return _pdf_text(path, data)
    # Text as every input is read (reading.py): a byte order mark says the
    # encoding, else UTF-8; a NUL byte or an undecodable one is no text.
    text = TextDecoder(f"'{path}'").decode(data, final=True).replace("\r\n", "\n")
    return html_text(text) if suffix in HTML_SUFFIXES else text


def sections(path: Path, text: str) -> list[Section]:
    """The passages of a document's text."""
    suffix = path.suffix.lower()
    if suffix == PDF_SUFFIX:
        pages = text.split("\f")
        return [
            Section(f"page {number}", None, None, piece)
            for number, page in enumerate(pages, 1)
            for piece in split_to_budget(page, PASSAGE_TOKENS, estimate_tokens)
            if page.strip()
        ]
    found = split_sections(text)
    if suffix in HTML_SUFFIXES:
        return [Section(s.heading, None, None, s.text) for s in found]
    return found


def split_sections(text: str) -> list[Section]:
    """Passages of Markdown, reStructuredText or plain text, with their lines."""
    lines = text.split("\n")
    found: list[Section] = []
    heading, start = "", 0
    block: list[str] = []  # the paragraph being read; `start` is its first line (0-based)
    section: list[tuple[int, int, str]] = []  # paragraphs of the current section

    def end_paragraph(upto: int) -> None:
        nonlocal block
        if any(line.strip() for line in block):
            section.append((start, upto - 1, "\n".join(block).strip("\n")))
        block = []

    def end_section() -> None:
        found.extend(_packed(heading, section))
        section.clear()

    in_fence = False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            atx = _ATX.match(line)
            title = block[-1].strip() if block else ""
            if atx or (_ADORNMENT.match(line) and title and not _ADORNMENT.match(title)):
                if not atx:
                    block.pop()  # the underlined line is the title, not text
                end_paragraph(index if atx else index - 1)
                end_section()
                heading = atx.group(2).strip() if atx else title
                continue
            if _ADORNMENT.match(line) and not block:
                continue  # an overline, or a rule between paragraphs
            if not line.strip():
                end_paragraph(index)
                continue
        if not block:
            start = index
        block.append(line)
    end_paragraph(len(lines))
    end_section()
    return found


def _packed(heading: str, paragraphs: list[tuple[int, int, str]]) -> list[Section]:
    """A section's paragraphs packed into passages of about PASSAGE_TOKENS; a
    longer paragraph is cut at sentences."""
    passages: list[Section] = []
    first = last = -1
    texts: list[str] = []
    for start, end, text in paragraphs:
        if texts and estimate_tokens("\n\n".join([*texts, text])) > PASSAGE_TOKENS:
            passages.append(Section(heading, first + 1, last + 1, "\n\n".join(texts)))
            texts = []
        if estimate_tokens(text) > PASSAGE_TOKENS:
            passages.extend(Section(heading, start + 1, end + 1, piece) for piece in _cut(text))
            continue
        if not texts:
            first = start
        texts.append(text)
        last = end
    if texts:
        passages.append(Section(heading, first + 1, last + 1, "\n\n".join(texts)))
    return passages


def _cut(paragraph: str) -> list[str]:
    return split_to_budget(paragraph, PASSAGE_TOKENS, estimate_tokens)


def _pdf_text(path: Path, data: bytes) -> str:
    """A PDF's pages, separated by form feeds."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except ImportError:
        raise InputError(f"'{path}' is a PDF, and reading PDFs needs pypdf: pip install pypdf") from None
    except (PyPdfError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"'{path}' is not a PDF that can be read ({error})") from None
    if not any(page.strip() for page in pages):
        raise InputError(f"'{path}' has no text to read (a scanned PDF needs OCR first)")
    return "\f".join(pages)


class _HtmlText(HTMLParser):
    """An HTML page's visible text, with h1-h6 as Markdown headings and a blank
    line after every block."""

    BLOCKS = frozenset({"p", "div", "section", "article", "li", "tr", "br", "table", "ul", "ol", "pre", "blockquote"})
    HIDDEN = frozenset({"script", "style", "head", "template", "noscript", "svg"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS or re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]*\n[ \t]*", "\n", text)).strip()
