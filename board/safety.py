"""Safe by default: where the board listens, who may use it, and which files a page may name.

The page can only reach files inside the workdir (uploads are copied there) plus folders the
person who started the board allowed with $TUNEBOARD_ALLOWED_DIRS; uploads are size-bounded,
renamed to a safe name and never executed. A non-local address needs a password.
"""

from __future__ import annotations

import filecmp
import ipaddress
import itertools
import os
import re
import shutil
import time
from pathlib import Path

from engine.messages import TuneboardError

DATA_SUFFIXES = {".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".pq", ".txt", ".text", ".md", ".gz", ".arrow", ".feather"}
CONFIG_SUFFIXES = {".yaml", ".yml"}
MAX_UPLOAD_MB = float(os.environ.get("TUNEBOARD_MAX_UPLOAD_MB", "512"))
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """`USER:PASSWORD` -> (user, password); None when not given; an error when malformed."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise TuneboardError("ui.error.auth_format")
    return user, password


def launch_auth(host: str, share: bool, auth: str | None) -> tuple[str, str] | None:
    """The credentials to serve with; refuses a public address or a share link without them."""
    creds = parse_auth(auth or os.environ.get("TUNEBOARD_AUTH"))
    if creds is None and (share or not is_loopback(host)):
        raise TuneboardError("ui.error.auth_required", host=host if not share else "--share")
    return creds


def allowed_roots(workdir: Path) -> list[Path]:
    roots = [workdir.resolve()]
    for part in os.environ.get("TUNEBOARD_ALLOWED_DIRS", "").split(os.pathsep):
        if part.strip():
            roots.append(Path(part.strip()).expanduser().resolve())
    return roots


def looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~", "\\")) or Path(text).suffix.lower() in DATA_SUFFIXES | CONFIG_SUFFIXES


def check_local_path(text: str, workdir: Path) -> Path:
    """A file or folder the page named, resolved (links followed) and inside an allowed root."""
    raw = Path(text).expanduser()
    path = (raw if raw.is_absolute() else workdir / raw).resolve()
    if not any(path.is_relative_to(root) for root in allowed_roots(workdir)):
        raise TuneboardError("ui.error.outside_workdir", path=text, workdir=str(workdir))
    return path


def check_data_path(text: str, workdir: Path) -> str:
    """What a dataset box may hold: `demo:<name>`, a hub name, or a file inside the workdir (made absolute)."""
    text = text.strip()
    if text.startswith("demo:"):
        return text
    if not looks_like_path(text) and not (workdir / text).exists():
        return text  # a hub name such as `tatsu-lab/alpaca`
    return str(check_local_path(text, workdir))


def check_model_path(text: str, workdir: Path) -> str:
    """A model box: `demo`, a hub id, or a local folder inside an allowed root."""
    text = text.strip()
    if text in ("", "demo"):  # an emptied box: the demo, as a new page starts
        return "demo"
    here = Path(text).expanduser()
    try:
        if looks_like_path(text) or (workdir / text).is_dir():
            return str(check_local_path(text, workdir))
        if here.is_dir():  # the engine would load this folder (relative to where it runs), not a hub id
            return str(check_local_path(str(here.resolve()), workdir))
    except TuneboardError as e:  # said for a model: the data's advice (upload the file) does not apply
        if not here.exists() and not (workdir / here).exists():  # a typo: not there, wherever it is
            raise TuneboardError("error.model_not_found", name=text) from e
        raise TuneboardError("ui.error.model_outside_workdir", path=text, workdir=str(workdir)) from e
    return text


def store_upload(
    src: str | os.PathLike, workdir: Path, suffixes: set[str] = DATA_SUFFIXES, max_mb: float = MAX_UPLOAD_MB
) -> Path:
    """Copy an uploaded file into <workdir>/uploads under a safe, unique name; it is only ever read."""
    src = Path(src)
    name = _SAFE_NAME.sub("_", src.name).strip("._") or "upload"
    suffix = "".join(Path(name).suffixes[-2:]) if name.endswith(".gz") else Path(name).suffix
    if suffix.lower().removesuffix(".gz") not in suffixes and suffix.lower() not in suffixes:
        raise TuneboardError("ui.error.upload_type", name=src.name, allowed=", ".join(sorted(suffixes)))
    size_mb = src.stat().st_size / 2**20
    if size_mb > max_mb:
        raise TuneboardError("ui.error.upload_size", name=src.name, size=f"{size_mb:.0f}", limit=f"{max_mb:.0f}")
    dest_dir = workdir / "uploads"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    stem = name[: -len(suffix)] if suffix else name
    for n in itertools.count():
        if not dest.exists():
            break
        if filecmp.cmp(src, dest, shallow=False):  # the same file again: one copy
            return dest
        # another file of that name: a copy beside it (a run may have trained on the earlier one)
        dest = dest_dir / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}{f'-{n}' if n else ''}{suffix}"
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o644)  # data, never a program
    return dest


_COPY_MARK = re.compile(r"-\d{8}-\d{6}(?:-\d+)?(?=\.[^.]+(?:\.gz)?$|$)")


def upload_name(path: str | os.PathLike) -> str:
    """The name a stored upload was uploaded as: `data-20261127-095035.json` -> `data.json`."""
    return _COPY_MARK.sub("", Path(path).name, count=1)


def run_path(run: str, workdir: Path) -> Path:
    """A run id (or folder) from the page -> its folder, which must lie in <workdir>/runs."""
    from engine.runs import resolve_run

    path = resolve_run(str(run), workdir)
    if not path.resolve().is_relative_to((Path(workdir) / "runs").resolve()):
        raise TuneboardError("error.run_not_found", run=str(run))
    return path
