"""The human sheet's cells as spreadsheets open them: no live formulas, and the encodings raters save in.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to Excel and
LibreOffice (``=HYPERLINK(...)``, ``+1+cmd|...``), and a model's answer can start that way. As OWASP's
"CSV Injection" guidance says, such a cell is written with a leading ``'``, which makes the program show it as
text; :func:`cell_text` takes it off again when the sheet is read, so every answer round-trips exactly.
A sheet saved by Excel on Windows ("CSV (Comma delimited)") is in the ANSI code page, cp1252, not UTF-8:
:func:`read_sheet_text` reads either and says which.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import AlpacaNbError

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def _needs_quote(text: str) -> bool:
    # a text already starting with ' before a formula character is quoted again, so reading it back is exact
    return text.startswith(FORMULA_STARTS) or (text.startswith(QUOTE) and _needs_quote(text[1:]))


def safe_cell(text: object) -> object:
    """``text`` as written to the sheet: with a leading ``'`` where a spreadsheet would read a formula."""
    return QUOTE + text if isinstance(text, str) and _needs_quote(text) else text


def cell_text(cell: str | None) -> str | None:
    """The original text of a cell written by :func:`safe_cell` (the inverse: ``cell_text(safe_cell(t)) == t``)."""
    if cell and cell.startswith(QUOTE) and _needs_quote(cell[1:]):
        return cell[1:]
    return cell


def read_sheet_text(path: str | Path) -> str:
    """The text of a sheet: UTF-8 (with or without a byte-order mark, as exported), else cp1252 (Excel on Windows,
    noted on stderr). Bytes that are neither raise :class:`AlpacaNbError` naming the file and what to do."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as utf8_error:
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError:
            raise AlpacaNbError(
                f"{path}: cannot tell the file's encoding (not UTF-8: byte {raw[utf8_error.start]:#04x} at offset "
                f"{utf8_error.start}; not Windows cp1252 either); save the sheet again as 'CSV UTF-8' "
                "(Excel: File > Save As > CSV UTF-8; LibreOffice: Character set Unicode (UTF-8))") from None
    print(f"{path}: not UTF-8; read as Windows cp1252 (as Excel's 'CSV (Comma delimited)' saves it)",
          file=sys.stderr)
    return text
