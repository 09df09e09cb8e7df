"""Item pictures: files shipped with the service, read once and served with validators."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

CONTENT_TYPES = {
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


@dataclass(frozen=True)
class Picture:
    content: bytes
    content_type: str
    etag: str
    last_modified: str


class PictureStore:
    """Pictures by file name from one directory; a name can never reach outside it."""

    def __init__(self, directory: Path, *, max_age: int) -> None:
        self.max_age = max_age
        self._directory = directory.resolve()
        self._cache: dict[str, Picture] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Every picture an item may name."""
        return sorted(
            path.name
            for path in self._directory.iterdir()
            if path.suffix.lower() in CONTENT_TYPES and path.is_file()
        )

    def get(self, file_name: str) -> Picture | None:
        with self._lock:
            picture = self._cache.get(file_name)
            if picture is None and (picture := self._load(file_name)) is not None:
                self._cache[file_name] = picture
            return picture

    def _load(self, file_name: str) -> Picture | None:
        path = (self._directory / file_name).resolve()
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is None or path.parent != self._directory or not path.is_file():
            return None
        content = path.read_bytes()
        return Picture(
            content=content,
            content_type=content_type,
            etag='"' + hashlib.sha256(content).hexdigest()[:32] + '"',
            last_modified=formatdate(path.stat().st_mtime, usegmt=True),
        )
