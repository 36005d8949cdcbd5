"""The one CSV writer of the product, safe to open in a spreadsheet, and the reader's inverse.

CSV injection (OWASP): a text cell that starts with = + - @ a tab or a carriage return is taken
for a formula by Excel, LibreOffice and Sheets (`=HYPERLINK(...)`, `@SUM(1+1)*cmd|...`). Every
CSV the product writes (cleaned_pairs_clean-ge-<threshold>.csv, decisions.csv, `mdw score` output) goes through
`csv_text` / `write_csv`, which prefix such a text cell with an apostrophe: the spreadsheet shows
the text and runs nothing. Only text (str) cells are changed; numbers (int, float, numpy numbers)
are written as numbers, so -0.5 stays -0.5.

`unescape_cell` undoes the prefix; the product's table reader (mdw/data/tables.py, CSV and TSV)
applies it to every cell it uses, so what `write_csv` wrote reads back as the same text.

The escape is lossless: a text cell that starts with apostrophes followed by a trigger character
("'=x") also gets one more apostrophe ("''=x"), and the reader removes exactly one. The price,
chosen knowingly: a hand-made CSV whose cell really starts with an apostrophe and then one of
= + - @ tab CR is read without that first apostrophe (it is taken for this escape, which is also
how spreadsheet users type such text). Cells without that shape are never touched. JSONL files are
not escaped or unescaped (no spreadsheet opens them).
"""
from __future__ import annotations

import csv
import io
import numbers
import re
from typing import Iterable, Mapping, Optional, Sequence

from .runs.store import atomic_write_text

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_LIKE = re.compile(r"'*[=+\-@\t\r]")  # matched at the start of a cell


def escape_cell(value):
    """A cell made safe for spreadsheets: a str starting with apostrophes then one of TRIGGERS
    gets a leading "'"; any other value (numbers, None, other text) is returned unchanged."""
    if isinstance(value, str) and _FORMULA_LIKE.match(value):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """The inverse of `escape_cell` for a cell read from a CSV/TSV file: one leading "'" is
    removed when what follows is apostrophes then one of TRIGGERS; other text is unchanged."""
    if text.startswith("'") and _FORMULA_LIKE.match(text, 1):
        return text[1:]
    return text


def _cells(row, header: Sequence[str], float_format: Optional[str]) -> list:
    if isinstance(row, Mapping):
        extra = [k for k in row if k not in header]
        if extra:
            raise ValueError(f"csv: row keys {extra} are not columns of {list(header)}")
        row = [row.get(k, "") for k in header]
    out = []
    for v in row:
        if float_format and isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral):
            v = format(v, float_format)  # a number's text: never escaped
        else:
            v = escape_cell(v)
        out.append(v)
    return out


def csv_text(header: Sequence[str], rows: Iterable, float_format: Optional[str] = None) -> str:
    """CSV text (comma-separated, "\\r\\n" line ends, minimal quoting) of a header line and rows.

    rows: sequences in header order, or mappings from column name to value (missing keys are
    empty; a key that is not a column is a ValueError). Text cells are escaped (`escape_cell`);
    numbers are not. float_format (e.g. ".6f") formats non-integral numbers; None writes repr.
    """
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([escape_cell(h) for h in header])
    for row in rows:
        w.writerow(_cells(row, header, float_format))
    return buf.getvalue()


def write_csv(path, header: Sequence[str], rows: Iterable, float_format: Optional[str] = None) -> str:
    """`csv_text` written atomically to `path` (UTF-8; a temp file, then a rename); returns the path."""
    return atomic_write_text(path, csv_text(header, rows, float_format))
