"""A validated cache of the catalog's read responses, one per process.

Each entry is a response body as it was serialised, with the catalog revision it was read at
(`catalog_revision`, moved by triggers in the same transaction as every change to items, brands
and types). Every read asks the database for the current revision first (one indexed row) and
serves the stored bytes only when it is still the entry's: a change committed through any
replica, by any writer, a stock reservation or raw SQL included, is never served stale. What it
saves is the rest: the data queries, the ORM objects, pydantic and JSON.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from prometheus_client import Counter
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from catalog import repository
from eshop_common.conditions import EntityTag, parse_entity_tag

# What an entry costs besides its body, measured with tracemalloc: about 600 bytes for the entry,
# its tag, its headers and the dict's node, and about 3.3 bytes per character of the key's repr
# (a tuple of 100 ids costs 4 KB). Counted generously, so that the bound holds.
ENTRY_OVERHEAD = 640
KEY_BYTES_PER_CHAR = 4


def _cost(key: Hashable, entry: Entry) -> int:
    """The bytes `entry` holds under `key`, estimated (ENTRY_OVERHEAD, KEY_BYTES_PER_CHAR)."""
    return len(entry.body) + KEY_BYTES_PER_CHAR * len(repr(key)) + ENTRY_OVERHEAD


LOOKUPS = Counter(
    "catalog_read_cache_requests",
    "Catalog reads by what the read cache did: hit (served the stored body), miss (read the data).",
    ["outcome"],
)
_HIT, _MISS = LOOKUPS.labels(outcome="hit"), LOOKUPS.labels(outcome="miss")


@dataclass(frozen=True, slots=True)
class Entry:
    revision: int
    body: bytes
    etag: str
    # Derived once, not per request: the validator If-None-Match is compared with, and the
    # headers every answer from this entry carries.
    tag: EntityTag = field(init=False)
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tag", parse_entity_tag(self.etag))
        # no-cache (RFC 9111 §5.2.2.4): a browser or proxy may store the response but must ask
        # again before every use; asking is cheap (a 304 costs the revision query) and an admin
        # edit is never served stale from a cache the service cannot reach.
        object.__setattr__(self, "headers", {"ETag": self.etag, "Cache-Control": "no-cache"})


# Given a session (in a transaction begun after the revision was read) and that revision: the
# body and the ETag field value of the response.
Loader = Callable[[Session, int], tuple[bytes, str]]


class ReadCache:
    """Least recently used entries first out, bounded by `max_bytes` of bodies (plus a fixed
    estimate per entry). Thread-safe: sync work runs on Starlette's thread pool."""

    def __init__(self, engine: Engine, factory: sessionmaker[Session], max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # The revision through its own engine (repository.make_revision_engine), the data
        # through the app's sessions.
        self.revision_engine = engine
        self._factory = factory
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def read(self, key: Hashable, load: Loader) -> Entry:
        """The response for `key` as of now: the stored one if the catalog has not changed
        since it was read, else `load`'s, stored for the next reader."""
        # The revision FIRST, then the data. PostgreSQL's READ COMMITTED: a statement sees every
        # change committed before it starts, and a change commits together with its revision
        # bump. So the data, read by statements that start after this one, include every change
        # the revision counts: the body is at least as new as `revision`. (A change committed in
        # between is in the body *and* moves the revision past the entry's: the entry is only
        # ever missed, never stale.) The other order could store data from before a change
        # under the revision after it, and serve it for as long as nothing else changes.
        revision = repository.catalog_revision(self.revision_engine)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.revision == revision:
                self._entries.move_to_end(key)
                _HIT.inc()
                return entry
        _MISS.inc()
        with repository.transaction(self._factory) as session:
            body, etag = load(session, revision)
        entry = Entry(revision, body, etag)
        self._store(key, entry)
        return entry

    def _store(self, key: Hashable, entry: Entry) -> None:
        size = _cost(key, entry)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                if old.revision > entry.revision:
                    return  # a reader that started later stored newer data first: keep it
                self._size -= _cost(key, old)
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self._size += size
            while self._size > self.max_bytes:
                evicted_key, evicted = self._entries.popitem(last=False)
                self._size -= _cost(evicted_key, evicted)
