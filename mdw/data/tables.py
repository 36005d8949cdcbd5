"""CSV / TSV / JSONL tables of (image, caption[, split]) rows into a PairSet, through the readers'
`Collector` (the bad-input rules of `readers.py`). Column names are matched case-insensitively among
the aliases below; CSV/TSV cells that `mdw.csvio` escaped for spreadsheets read back as written.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Iterator, Optional

from ..csvio import unescape_cell
from ..errors import DataError
from .pairset import FileImages, PairSet
from .readers import Collector, has_bad_bytes, normalize_split, read_text

IMAGE_COLUMNS = ("image", "image_path", "filepath", "file_path", "filename", "file_name", "file",
                 "path", "url", "image_url")
CAPTION_COLUMNS = ("caption", "text", "title", "sentence", "raw", "description")
SPLIT_COLUMNS = ("split", "subset")

_NO_SPLIT = object()  # a table without a split column: split by a hash of the image name


def _pick(columns: list, aliases: tuple) -> Optional[str]:
    low = {str(col).strip().lower(): col for col in columns}
    return next((low[a] for a in aliases if a in low), None)


def _columns(path: str, found: list, where: str = "") -> tuple:
    image, caption, split = (_pick(found, a) for a in (IMAGE_COLUMNS, CAPTION_COLUMNS, SPLIT_COLUMNS))
    if image is None or caption is None:
        raise DataError(f"{path}{where}: needs columns image and caption; found: "
                        f"{', '.join(map(str, found)) or 'nothing'} (image may also be called "
                        f"{'/'.join(IMAGE_COLUMNS[1:])}; caption {'/'.join(CAPTION_COLUMNS[1:])})")
    return image, caption, split


def read_table(path: str, image_root: str = "", max_skip_fraction: float = 0.05,
               fmt: Optional[str] = None) -> PairSet:
    """CSV (header line; .tsv is tab-separated) or JSONL with image, caption [, split].

    fmt: "csv" | "jsonl" | None (from the extension). Image paths are relative to image_root, or to
    the table's folder. Without a split column, images are split 90/5/5 % by a hash of their name.
    A JSONL line that is not a JSON object is skipped and counted (a truncated last line stays usable).
    CSV/TSV cells written with the spreadsheet-formula escape ("'=..."; mdw/csvio.py) read back as
    the text they escaped, so the product's own CSV exports can be read again; JSONL is taken as is.
    """
    if fmt is None:
        fmt = "jsonl" if path.lower().endswith((".jsonl", ".ndjson")) else "csv"
    if fmt not in ("csv", "jsonl"):
        raise DataError(f"{path}: unknown table format {fmt!r} (csv or jsonl)")
    text = read_text(path)
    root = image_root or os.path.dirname(path) or "."
    c = Collector(f"{fmt}:{path}", root)
    rows = _jsonl_rows(path, text, c) if fmt == "jsonl" else _csv_rows(path, text, c)
    for image, caption, split, where in rows:
        if not isinstance(image, str) or not image.strip():
            c.skip("no image path", where)
            continue
        if not isinstance(caption, str):
            c.skip("empty caption" if caption is None else "caption is not text", where)
            continue
        image = image.strip()
        if image.lower().startswith(("http://", "https://")):
            raise DataError(f"{where}: image {image!r} is a URL; images must be local files "
                            "(download them first, e.g. with img2dataset, and read the shards)")
        image = os.path.normpath(image[7:] if image.startswith("file://") else image)
        split = None if split is _NO_SPLIT else normalize_split(split, f"{where}: split")
        c.add(image, split, caption, where)
    return c.finish(FileImages(root, list(c.names)), max_skip_fraction)


def _csv_rows(path: str, text: str, c: Collector) -> Iterator[tuple]:
    fname = os.path.basename(path)
    first = text.split("\n", 1)[0]
    tabs = path.lower().endswith(".tsv") or ("\t" in first and "," not in first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tabs else ",",
                        quoting=csv.QUOTE_NONE if tabs else csv.QUOTE_MINIMAL, strict=True)
    try:
        header = next(reader, [])
        image_col, caption_col, split_col = _columns(path, header)
        ii, ci = header.index(image_col), header.index(caption_col)
        si = header.index(split_col) if split_col is not None else None
        need, last = max(ii, ci, -1 if si is None else si), reader.line_num
        for row in reader:  # `where` is a record's first line (a quoted caption may span lines)
            where, last = f"{fname} line {last + 1}", reader.line_num
            if not row or not any(f.strip() for f in row):
                continue
            if len(row) <= need:
                c.skip("malformed line", where)
                continue
            yield (unescape_cell(row[ii]), unescape_cell(row[ci]),
                   _NO_SPLIT if si is None else unescape_cell(row[si]), where)
    except csv.Error as e:
        raise DataError(f"{fname} line {reader.line_num}: not valid CSV ({e})") from None


def _jsonl_rows(path: str, text: str, c: Collector) -> Iterator[tuple]:
    fname = os.path.basename(path)
    cols = None
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{fname} line {n}"
        if has_bad_bytes(line):
            c.skip("invalid UTF-8", where)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            c.skip("not a JSON object", where)
            continue
        if cols is None:
            cols = _columns(path, list(obj), f" line {n}")
        image_key, caption_key, split_key = cols
        split = _NO_SPLIT if split_key is None else obj.get(split_key)
        yield obj.get(image_key), obj.get(caption_key), split, where
