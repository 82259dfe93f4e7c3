"""Pulling a profile's models through `huggingface_hub` into the usual hub cache, and checking them.

- `HF_ENDPOINT` and `HF_HOME` / `HF_HUB_CACHE` are read at call time (huggingface_hub reads them once, at
  import), so a test or a user can point the workbench at a mirror or another cache in the same process.
- Downloads are `snapshot_download`'s: progress bars, `.incomplete` files resumed with an HTTP Range request
  (also within one call when the connection drops mid-file).
- Integrity: a cached blob is named by the hub's hash of the file (the sha256 for LFS files, the git blob
  sha1 otherwise; the ETag the hub sent). `verify` recomputes every file's hash and compares; `pull`
  verifies what it fetched and deletes a file that does not match, so a corrupted download is refused and
  the next pull fetches it again. A snapshot entry that is not a link to such a blob (a plain file, e.g. a
  cache copied with links dereferenced, or a link elsewhere) cannot be checked: `verify` reports it as
  `unchecked` with why, and it is not ok; a link to a missing blob is bad.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.models.profiles import ModelSpec


class ModelIntegrityError(WorkbenchError):
    """A pulled file's content does not match the hub's hash."""


class HubUnreachable(WorkbenchError):
    """The hub does not answer (offline, firewalled, or HF_ENDPOINT wrong)."""


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline_by_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextlib.contextmanager
def _online_as_env_says():
    """huggingface_hub fixed its offline switch at import; follow the environment as it is now."""
    from huggingface_hub import constants

    if offline_by_env():
        raise HubUnreachable("offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set); unset it to pull")
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _repo_folder(repo_id: str) -> Path:
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def snapshot_path(spec: ModelSpec) -> Path | None:
    """The cached snapshot folder of `spec`'s revision, or None if it was never pulled."""
    repo = _repo_folder(spec.repo_id)
    ref = repo / "refs" / spec.revision
    commit = ref.read_text().strip() if ref.is_file() else spec.revision
    snap = repo / "snapshots" / commit
    return snap if snap.is_dir() else None


def _files(snap: Path) -> list[Path]:
    return sorted(p for p in snap.rglob("*") if p.is_file())


def is_present(spec: ModelSpec) -> bool:
    snap = snapshot_path(spec)
    if snap is None:
        return False
    names = [str(p.relative_to(snap)) for p in _files(snap)]
    return all(any(fnmatch.fnmatch(n, pat) for n in names) for pat in spec.required)


def size_bytes(spec: ModelSpec) -> int:
    snap = snapshot_path(spec)
    return sum(p.stat().st_size for p in _files(snap)) if snap else 0


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class VerifyReport:
    spec: ModelSpec
    path: Path | None
    checked: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)   # (file, reason)
    missing: list[str] = field(default_factory=list)            # required globs with no file
    unchecked: list[tuple[str, str]] = field(default_factory=list)   # (file, why it cannot be checked)

    @property
    def ok(self) -> bool:
        return self.path is not None and not self.bad and not self.missing and not self.unchecked


def verify(spec: ModelSpec) -> VerifyReport:
    """Recompute each cached file's hash and compare it with the hub's (the blob's name). Offline."""
    snap = snapshot_path(spec)
    rep = VerifyReport(spec, snap)
    if snap is None:
        rep.missing = list(spec.required)
        return rep
    names = []
    blobs = (snap.parent.parent / "blobs").resolve()
    for f in sorted(p for p in snap.rglob("*") if p.is_file() or p.is_symlink()):   # dangling links too
        rel = str(f.relative_to(snap))
        names.append(rel)
        why = _uncheckable(f, blobs)
        if why is not None:
            (rep.bad if why.startswith("a link to a missing") else rep.unchecked).append((rel, why))
            continue
        blob = f.resolve()
        expected = blob.name
        got = _sha256(blob) if len(expected) == 64 else _git_blob_sha1(blob)
        rep.checked.append(rel)
        if got != expected:
            rep.bad.append((rel, f"content hash {got[:12]}… ≠ hub's {expected[:12]}…"))
    rep.missing = [pat for pat in spec.required if not any(fnmatch.fnmatch(n, pat) for n in names)]
    return rep


_HASH_NAME = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _uncheckable(entry: Path, blobs: Path) -> str | None:
    """Why a snapshot entry cannot be checked against the hub's hash (None: it can): the hash is the name of the
    blob it links to, so a plain file, a link out of the cache's blobs or a blob not named by a hash has none."""
    if not entry.is_symlink():
        return ("a plain file, not a link to a blob named by the hub's hash: nothing to check it against (a cache "
                "copied with links dereferenced?)")
    if not entry.exists():
        return f"a link to a missing blob ({os.readlink(entry)})"
    blob = entry.resolve()
    if blob.parent != blobs or not _HASH_NAME.fullmatch(blob.name):
        return f"links to {blob}, not to a blob of this cache named by the hub's hash: nothing to check it against"
    return None


def remove_files(spec: ModelSpec, rels: list[str]) -> None:
    """Delete the snapshot links and blobs of `rels`, so the next pull fetches them again."""
    snap = snapshot_path(spec)
    if snap is None:
        return
    for rel in rels:
        link = snap / rel
        blob = link.resolve()
        for p in {link, blob}:
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def hub_answers(spec: ModelSpec, timeout: float = 5.0) -> bool:
    """Does the hub answer for this repository (a cheap metadata request)?"""
    from huggingface_hub import HfApi

    try:
        with _online_as_env_says():
            HfApi(endpoint=hub_endpoint()).model_info(spec.repo_id, revision=spec.revision, timeout=timeout)
        return True
    except Exception:
        return False


def pull(spec: ModelSpec, *, progress: bool = True) -> Path:
    """Download (or resume) `spec` into the hub cache, verify it, return the snapshot folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    if not progress:
        disable_progress_bars()
    try:
        with _online_as_env_says():
            path = Path(snapshot_download(spec.repo_id, revision=spec.revision, cache_dir=str(hub_cache_dir()),
                                          endpoint=hub_endpoint(), allow_patterns=list(spec.allow_patterns) or None,
                                          ignore_patterns=list(spec.ignore_patterns) or None))
    except (LocalEntryNotFoundError, OSError) as exc:
        raise HubUnreachable(f"could not download {spec.repo_id} from {hub_endpoint()} ({str(exc).splitlines()[0]}); "
                             "check the connection (HF_ENDPOINT for a mirror) and run the pull again: what was "
                             "downloaded is kept and resumed") from None
    except HfHubHTTPError as exc:
        raise HubUnreachable(f"{spec.repo_id}: the hub refused the download ({str(exc).splitlines()[0]})") from None
    finally:
        if not progress:
            enable_progress_bars()
    rep = verify(spec)
    if rep.bad or rep.unchecked:
        remove_files(spec, [f for f, _ in rep.bad + rep.unchecked])
        raise ModelIntegrityError(
            f"{spec.repo_id}: {len(rep.bad) + len(rep.unchecked)} downloaded file(s) do not match the hub's hash "
            "(or cannot be checked against it) and were deleted: "
            + "; ".join(f"{f}: {why}" for f, why in rep.bad + rep.unchecked)
            + f". Run `workbench models pull` again to fetch them anew ({path})")
    if rep.missing:
        raise WorkbenchError(f"{spec.repo_id}: the download has no file matching {', '.join(rep.missing)}; the "
                             f"repository at {hub_endpoint()} is not the expected model")
    return path
