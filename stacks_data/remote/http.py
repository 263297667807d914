"""
Fetching one file over HTTP(S): retries with backoff, never a partial file under the final name,
and the Hugging Face token only where it belongs.

The body goes to `<dest>.part`; only once its length matches Content-Length and `verify` accepts it
is it renamed to `dest`. A crash leaves at most a `.part` file, which the next attempt overwrites.
A host that does not resolve or refuses the connection fails at once (retrying cannot help), with a
message naming the offline form of that input.

HF_TOKEN goes only to the hub endpoint ($HF_ENDPOINT, default https://huggingface.co) over https, or
to the hosts listed in $STACKS_DATA_TOKEN_HOSTS (comma-separated host or host:port, for a private
mirror), and never along a redirect (the hub redirects files to CDN / storage hosts).
"""

import http.client
import os
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

from stacks_data.errors import NetworkError, UserError
from stacks_data.dataset.files import locked

CHUNK = 1 << 20
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def token_for(url: str) -> str | None:
    """HF_TOKEN if `url` may see it (see the module docstring), else None."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        return None
    target = urllib.parse.urlsplit(url)
    hub = urllib.parse.urlsplit(hub_endpoint())
    if target.scheme == "https" and hub.scheme == "https" and target.netloc == hub.netloc:
        return token
    allowed = {h.strip() for h in os.environ.get("STACKS_DATA_TOKEN_HOSTS", "").split(",") if h.strip()}
    return token if target.netloc in allowed or target.hostname in allowed else None


def check_reachable(url: str, offline: str, timeout: float = 5.0) -> None:
    """NetworkError at once when url's host does not resolve or refuses connections."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except socket.gaierror:
        raise NetworkError(f"cannot resolve {parts.hostname} (no network?)", url, offline) from None
    except OSError as e:
        raise NetworkError(f"cannot connect to {parts.hostname}:{port} ({e.strerror or e})", url, offline) from None


def download(url: str, dest: str, *, offline: str, verify: Callable[[str], None] | None = None,
             retries: int = 5, backoff: float = 1.0, timeout: float = 60.0) -> str:
    """Download url to dest unless dest exists; return dest.

    offline: what to do instead when the download cannot happen (names the flag of the offline form).
    verify(path) raises ValueError on a file damaged in transit (e.g. a truncated parquet footer): that
    counts as a failed attempt; a UserError from it (a complete file with the wrong content) is final. Client errors (4xx except 429), unknown hosts and refused connections are final; server
    errors, dropped connections and truncated bodies are retried `retries` times, sleeping
    backoff * 2**attempt in between.
    """
    if os.path.exists(dest):
        return dest
    from huggingface_hub import constants  # HF_HUB_OFFLINE as the Hub client reads it: one answer everywhere

    if constants.is_offline_mode():
        raise NetworkError("HF_HUB_OFFLINE is set, and this file is not here yet", dest, offline)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    # runs that share a cache folder (a vocab sweep over one corpus) fetch each file once
    with locked(dest):
        if os.path.exists(dest):
            return dest  # another process got it meanwhile
        return _download(url, dest, offline, verify, retries, backoff, timeout)


def _download(url, dest, offline, verify, retries, backoff, timeout) -> str:
    part = f"{dest}.part"
    token = token_for(url)
    last_error = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        request = urllib.request.Request(url, headers={"User-Agent": "stacks-data"})
        if token:
            request.add_unredirected_header("Authorization", f"Bearer {token}")
        try:
            _fetch(request, part, timeout)
            if verify is not None:
                try:
                    verify(part)
                except UserError as e:  # complete, but not what we need: say which file, not its temp name
                    raise type(e)(e.what, f"{dest}, from {url}", e.todo) from None
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as e:
            last_error = f"HTTP {e.code}"
            if 400 <= e.code < 500 and e.code != 429:
                break  # not found / forbidden: asking again will not help
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.gaierror, ConnectionRefusedError)):
                check_reachable(url, offline)  # raises the one-line reason
            last_error = f"{e.reason}"
        except (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError, ValueError) as e:
            last_error = f"{type(e).__name__}: {e}"
        finally:
            if os.path.exists(part):
                os.remove(part)
    raise NetworkError(f"could not download it ({last_error}, {attempt + 1} attempt{'s' if attempt else ''})",
                       url, offline)


def _fetch(request: urllib.request.Request, part: str, timeout: float) -> None:
    with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as f:
        shutil.copyfileobj(response, f, CHUNK)
        expected = response.headers.get("Content-Length")
    size = os.path.getsize(part)
    if expected is not None and size != int(expected):
        raise ValueError(f"truncated body: got {size} of {expected} bytes")
