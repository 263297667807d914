"""Reading parquet inputs, with errors that name the file, the row and the column."""

from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq


class InputError(ValueError):
    """Bad input data: the message names the file and, where known, row and field."""


def open_parquet(path: str, columns: list[str]) -> pq.ParquetFile:
    """Open a parquet file and check that it has `columns`."""
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: not a readable parquet file ({e})") from None
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; it has {pf.schema_arrow.names}")
    return pf


def read_rows(path: str, columns: list[str]) -> list[dict]:
    """All rows of `columns` as dicts, in file order."""
    pf = open_parquet(path, columns)
    try:
        return pf.read(columns=columns).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: cannot read ({e})") from None


def iter_texts(path: str, column: str = "text") -> Iterator[tuple[int, list[str]]]:
    """(first row index, texts) per row group of a one-document-per-row parquet file.

    Every value must be a non-null string; the error names the offending row.
    """
    pf = open_parquet(path, [column])
    row = 0
    for group in range(pf.num_row_groups):
        try:
            array = pf.read_row_group(group, columns=[column]).column(column)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{path}: cannot read row group {group} ({e})") from None
        check_texts(array, path, row, column)
        yield row, array.to_pylist()
        row += len(array)


def check_texts(array: pa.ChunkedArray, path: str, first_row: int, column: str) -> None:
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise InputError(f"{path}: column {column!r} has type {array.type}, expected string")
    if array.null_count:
        nulls = array.is_null().to_pylist()
        raise InputError(f"{path}: row {first_row + nulls.index(True)}: {column!r} is null, expected a string")
