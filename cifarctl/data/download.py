"""Fetching the official CIFAR-10 python tarball with torchvision's downloader (issue 2).

    tarball = fetch_cifar10(workdir)   # verified against the md5, else CifarctlError

`$CIFARCTL_CIFAR10_URL` points at a mirror (or a test server; `file:///shared/...` for a copy
on a shared disk); `$CIFARCTL_CIFAR10_MD5` gives that file's md5 and goes with the URL (alone
it is refused: the official file's md5 is known). The caller owns `workdir` and removes it
whatever happens, so a failed or corrupt download leaves nothing.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from cifarctl.errors import CifarctlError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # of the official tarball (torchvision's)
FILENAME = "cifar-10-python.tar.gz"


def source_url() -> tuple[str, str]:
    """(url, md5) after the environment overrides."""
    url, md5 = os.environ.get("CIFARCTL_CIFAR10_URL"), os.environ.get("CIFARCTL_CIFAR10_MD5")
    if md5 and not url:
        raise CifarctlError("$CIFARCTL_CIFAR10_MD5 is set without $CIFARCTL_CIFAR10_URL: it "
                            "is the md5 of a mirror's file; set both, or unset it")
    return url or CIFAR10_URL, md5 or CIFAR10_MD5


def fetch_cifar10(workdir: Path) -> Path:
    """Download the tarball into `workdir` and check its md5; return its path."""
    from torchvision.datasets.utils import calculate_md5, download_url

    url, md5 = source_url()
    path, parsed = workdir / FILENAME, urllib.parse.urlparse(url)
    if parsed.scheme == "file":  # copied: urllib's file responses lack what torchvision reads
        src = Path(urllib.request.url2pathname(parsed.path))
        try:
            shutil.copyfile(src, path)
        except OSError as err:
            raise CifarctlError(f"could not copy {url} ({err.strerror}); check the path in "
                                "$CIFARCTL_CIFAR10_URL") from None
    else:
        # torchvision draws its own progress bar on stderr: the download's bar on a terminal,
        # but noise in logs and tests, where it is swallowed.
        quiet = contextlib.nullcontext() if sys.stderr.isatty() \
            else contextlib.redirect_stderr(io.StringIO())
        try:
            with quiet:
                download_url(url, str(workdir), filename=FILENAME)
        except http.client.IncompleteRead as err:  # the server promised more than it sent
            raise CifarctlError(f"{url} was cut short after {len(err.partial)} bytes: the file "
                                "is truncated and was not cached; retry") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            # HTTPError reads "HTTP Error 404: Not Found"; a URLError's reason says more.
            http_error = isinstance(err, urllib.error.HTTPError)
            reason = err if http_error else getattr(err, "reason", err)
            raise CifarctlError(f"could not download {url} ({reason}); check the network, set "
                                "$CIFARCTL_CIFAR10_URL to a mirror, or use a local copy with "
                                "--dataset PATH (a .tar.gz or folder of CIFAR batches or "
                                "images; imported once, then cached) or "
                                "--dataset synthetic") from None
    got = calculate_md5(path)
    if got != md5:
        raise CifarctlError(f"{url} arrived with md5 {got}, expected {md5}: the file is "
                            "truncated or corrupt and was not cached; retry, or set "
                            "$CIFARCTL_CIFAR10_URL and $CIFARCTL_CIFAR10_MD5 together")
    return path
