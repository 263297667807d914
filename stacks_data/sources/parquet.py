"""Reading parquet inputs, with errors that name the file, the row and the column."""

import hashlib
import os
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from stacks_data.errors import InputError

def open_parquet(path: str, columns: list[str]) -> pq.ParquetFile:
    """Open a parquet file and check that it has `columns`."""
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"not a readable parquet file ({e})", path) from None
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise InputError(f"missing column(s) {missing}; it has {pf.schema_arrow.names}", path)
    return pf


def check_complete(path: str) -> None:
    """ValueError unless the file's footer reads: a download cut short or damaged (try again)."""
    try:
        pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"not a complete parquet file ({e})") from None


def read_rows(path: str, columns: list[str]) -> list[dict]:
    """All rows of `columns` as dicts, in file order."""
    pf = open_parquet(path, columns)
    try:
        return pf.read(columns=columns).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"cannot read it ({e})", path) from None


def read_texts(pf: pq.ParquetFile, path: str, group: int, first_row: int, column: str = "text") -> list[str]:
    """The texts of one row group: every value a non-null string, or an error naming the row."""
    try:
        array = pf.read_row_group(group, columns=[column], use_threads=False).column(column)
    except (OSError, pa.ArrowException) as e:  # e.g. a corrupt data page under an intact footer
        raise InputError(f"cannot read row group {group} ({e})", f"{path} rows {first_row}+") from None
    check_texts(array, path, first_row, column)
    return array.to_pylist()


def row_group_starts(path: str, column: str) -> list[tuple[int, int]]:
    """(row group, its first row) of each row group of a parquet file that has `column`."""
    metadata = open_parquet(path, [column]).metadata
    starts, row = [], 0
    for group in range(metadata.num_row_groups):
        starts.append((group, row))
        row += metadata.row_group(group).num_rows
    return starts


def iter_texts(path: str, column: str = "text") -> Iterator[tuple[int, list[str]]]:
    """(first row index, texts) per row group of a one-document-per-row parquet file."""
    pf = open_parquet(path, [column])
    row = 0
    for group in range(pf.num_row_groups):
        texts = read_texts(pf, path, group, row, column)
        yield row, texts
        row += len(texts)


def check_text_type(arrow_type: pa.DataType, path: str, column: str) -> None:
    if not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)):
        raise InputError(f"column {column!r} has type {arrow_type}, expected string", path,
                         "pass --text-column with the column that holds the documents (as text)")


def check_texts(array: pa.ChunkedArray, path: str, first_row: int, column: str) -> None:
    check_text_type(array.type, path, column)
    if array.null_count:
        nulls = array.is_null().to_pylist()
        raise InputError(f"{column!r} is null, expected a string", f"{path} row {first_row + nulls.index(True)}")


def file_identity(path: str) -> str:
    """A cheap content identity of a parquet file: its size and a hash of its footer (the file's last
    bytes: the metadata with every column chunk's offset, size and statistics). Another file under the
    same name has another identity."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - 8))
        end = f.read()
        length = int.from_bytes(end[:4], "little") + 8 if end[4:] == b"PAR1" else len(end)
        f.seek(max(0, size - length))
        footer = f.read()
    return f"{size}:{hashlib.sha256(footer).hexdigest()[:32]}"
