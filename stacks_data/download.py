"""
Fetching one file over HTTP(S): retries with backoff, never a partial file under the final name.

The body goes to `<dest>.part`; only once its length matches Content-Length and `verify` accepts it
is it renamed to `dest`. A crash leaves at most a `.part` file, which the next attempt overwrites.
"""

import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
from typing import Callable

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


def download(url: str, dest: str, *, verify: Callable[[str], None] | None = None,
             token: str | None = None, retries: int = 5, backoff: float = 1.0,
             timeout: float = 60.0) -> str:
    """Download url to dest unless dest exists; return dest.

    verify(path) raises on a corrupt file (e.g. a truncated parquet footer): that counts as a failed
    attempt. Client errors (4xx except 429) are final; server errors, dropped connections and
    truncated bodies are retried `retries` times, sleeping backoff * 2**attempt in between.
    """
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = f"{dest}.part"
    last_error = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        request = urllib.request.Request(url, headers={"User-Agent": "stacks-data"})
        if token:
            # unredirected: the hub redirects files to CDN / storage hosts, which must not see the token
            request.add_unredirected_header("Authorization", f"Bearer {token}")
        try:
            _fetch(request, part, timeout)
            if verify is not None:
                verify(part)
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as e:
            last_error = f"HTTP {e.code}"
            if 400 <= e.code < 500 and e.code != 429:
                break  # not found / forbidden: asking again will not help
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            last_error = f"{type(e).__name__}: {e}"
        finally:
            if os.path.exists(part):
                os.remove(part)
    raise DownloadError(f"could not download {url} -> {dest} ({last_error}, {attempt + 1} attempts)")


def _fetch(request: urllib.request.Request, part: str, timeout: float) -> None:
    with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as f:
        shutil.copyfileobj(response, f, CHUNK)
        expected = response.headers.get("Content-Length")
    size = os.path.getsize(part)
    if expected is not None and size != int(expected):
        raise ValueError(f"truncated body: got {size} of {expected} bytes")
