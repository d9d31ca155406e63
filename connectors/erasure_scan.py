"""Erasure in Redis: the user's keys, their stream entries (scanned off the sink's write
path), receipts.

Deleting a user's entries from the recs stream and the dead-letter stream means reading
the streams (inside Redis, :data:`_ERASE_CHUNK` in chunks): about 35 ms for 15,000
entries and 200 ms for the default 100,000, during which a sink that waited would hold
every other user's lists. So the sink does only the quick, atomic part of an erasure in
its batch (:func:`mark_erasure`: delete the user's keys and note, in the hash
``{prefix}:erasing``, the last entry of each stream at that moment) and a thread of its
own (:class:`ErasureScanner`) deletes the user's entries up to those marks, then
confirms the receipt and drops the note. The recs-stream entries the sink wrote itself
go by id (``known`` in :meth:`ErasureScanner.submit`, ``connectors.recs_index``); the
streams are scanned only for entries it cannot know.

The note is what makes this safe: entries the user gets after the erasure (a new life)
lie past the marks and stay; a worker killed before the scan finished leaves the note
in Redis, and the first worker (index 0) finishes it at its next start (scans are
idempotent, so a note scanned twice does no harm). A receipt is written only once the
entries are gone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import orjson
import redis
from redis.backoff import ExponentialBackoff

from connectors.recs_index import stream_id
from operators.messages import EraseUser
from streamrec.metrics import ERASURE_SCANS, ERASURES_PENDING
from streamrec.settings import redact_url

__all__ = ["ErasureScanner", "mark_erasure", "note_field", "scan_user_entries", "erase_user",
           "delete_entries", "unknown_part",
           "confirm_erasure", "ERASURES_MAXLEN", "RECEIPT_PENDING_TTL"]

log = logging.getLogger(__name__)

# KEYS[1] = stream, ARGV[1] = start id (inclusive), ARGV[2] = chunk size, ARGV[3] = user
# id, ARGV[4] = last id to read (inclusive; "+" for the end). Deletes that user's entries
# among the next chunk, server-side, so erasure never ships the stream to Python.
# Returns {removed, last id read or "" when the range is done}.
_ERASE_CHUNK = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[4], 'COUNT', tonumber(ARGV[2]))
local doomed = {}
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'user_id' then
      if fields[i + 1] == ARGV[3] then doomed[#doomed + 1] = entry[1] end
      break
    end
  end
end
local removed = 0
for i = 1, #doomed, 500 do  -- unpack() has a stack limit: delete in slices
  removed = removed + redis.call('XDEL', KEYS[1], unpack(doomed, i, math.min(i + 499, #doomed)))
end
local last = ''
if #entries == tonumber(ARGV[2]) then last = entries[#entries][1] end
return {removed, last}
"""

# KEYS[1] = the erasing hash, KEYS[2] = recs stream, KEYS[3] = dead-letter stream,
# KEYS[4..] = the user's keys to delete now; ARGV[1] = the note's field (the erasure and a
# token of this call). In one step: delete the keys and note the last entry of each
# stream ("" for an empty one), so no entry written before the erasure can fall outside
# the note. A retried call (its reply lost) finds its note and returns it unchanged.
_MARK = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then return held end
local function last(stream)
  local e = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #e == 0 then return '' end
  return e[1][1]
end
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
local ends = last(KEYS[2]) .. ' ' .. last(KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], ends)
return ends
"""


def scan_user_entries(client: redis.Redis, stream: str, user_id: str, end: str = "+",
                      scan_chunk: int = 2000) -> int:
    """Delete ``user_id``'s entries of ``stream`` up to ``end`` (inclusive), a Lua
    script per ``scan_chunk`` entries (about a millisecond each, so Redis is never
    blocked for long). Returns how many went."""
    if not 0 < scan_chunk <= 10_000:
        raise ValueError(f"scan_user_entries: scan_chunk must be in 1..10000, got {scan_chunk}")
    scan = client.register_script(_ERASE_CHUNK)
    removed, start = 0, "-"
    while True:
        n, last = scan(keys=[stream], args=[start, scan_chunk, user_id, end])
        removed += int(n)
        if not last:
            return removed
        ms, _, seq = last.decode().partition("-")
        start = f"{ms}-{int(seq) + 1}"


def delete_entries(client: redis.Redis, stream: str, ids: list[str]) -> int:
    """``XDEL`` of ``ids`` (those already trimmed count for nothing); returns how many went."""
    removed = 0
    for at in range(0, len(ids), 500):
        removed += int(client.xdel(stream, *ids[at : at + 500]))
    return removed


def unknown_part(client: redis.Redis, stream: str, bound: str, end: str) -> str | None:
    """The last id of ``stream`` to scan when every entry from ``bound`` on is known:
    None when the stream holds nothing older than ``bound``, else ``bound`` or ``end``,
    whichever is earlier (scanning ``bound`` itself too is harmless)."""
    first = client.xrange(stream, count=1)
    if not first or stream_id(first[0][0]) >= stream_id(bound):
        return None
    return end if stream_id(end) < stream_id(bound) else bound


def note_field(erase: EraseUser, token: str) -> bytes:
    """The note's field in ``{prefix}:erasing``: the erasure as JSON (which holds no raw
    newline), a newline, and a token of the sink's call (so a retried call finds its
    own note, and two erasures of one user get a note each)."""
    body = orjson.dumps([erase.user_id, erase.part, erase.receipt])
    return body + b"\n" + token.encode()


def _erasure_of(field: bytes) -> EraseUser:
    user_id, part, receipt = orjson.loads(field.rpartition(b"\n")[0])
    return EraseUser(user_id, user_id, part, receipt)


def mark_erasure(client: redis.Redis, keys, erase: EraseUser, field: bytes) -> tuple[str, str]:
    """Delete the user's keys of ``erase.part`` and note the erasure under ``field``
    (:func:`note_field`) for the scan; returns the last entry ids of the recs and
    dead-letter streams ("" for none)."""
    doomed = [keys.latest(erase.user_id)]
    if erase.part == "all":
        doomed.append(keys.profile(erase.user_id))
    script = client.register_script(_MARK)
    ends = script(keys=[keys.erasing, keys.recs, keys.dlq, *doomed], args=[field])
    recs_end, _, dlq_end = ends.decode().partition(" ")
    return recs_end, dlq_end


# Erasure receipts. An erasure is executed in two parts that may run on different
# workers in either order (see EraseUser); each part, once executed, records itself
# under a key of its own (user and receipt), and the part that finds the other one
# already there writes the receipt. Atomic in Redis, so it holds across workers and
# processes. "done" stays for a day, so a replay after a crash does not confirm twice.
# KEYS[1] = pending key, KEYS[2] = erasures stream; ARGV = part, ttl, maxlen, receipt,
# user id, completed_at. Returns 1 when it wrote the receipt.
_CONFIRM_ERASURE = """
local cur = redis.call('GET', KEYS[1])
if cur == 'done' then return 0 end
if ARGV[1] ~= 'all' and (not cur or cur == ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[3]), '*',
           'receipt', ARGV[4], 'user_id', ARGV[5], 'completed_at', ARGV[6])
redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2]))
return 1
"""

#: Entries kept on ``{prefix}:erasures`` (``XADD MAXLEN ~``).
ERASURES_MAXLEN = 100_000
#: Seconds a half-done erasure (one part executed) and a confirmed one are remembered.
RECEIPT_PENDING_TTL = 86_400


def erase_user(client: redis.Redis, keys, user_id: str, scan_chunk: int = 2000,
               part: str = "all") -> int:
    """Delete everything Redis holds about a user: keys, stream entries, dead letters.

    ``part`` limits it to the profile key (``"profile"``) or to the rest (``"outputs"``):
    the two halves of an erasure travel different routes, see ``EraseUser``.
    Returns the number of stream entries removed. Streams are scanned inside Redis (a
    Lua script per chunk of ``scan_chunk`` entries, about a millisecond each), so Redis is
    never blocked for long and no entry travels to the worker; erasure is rare.
    """
    if not 0 < scan_chunk <= 10_000:
        raise ValueError(f"erase_user: scan_chunk must be in 1..10000, got {scan_chunk}")
    if part == "profile":
        client.delete(keys.profile(user_id))
        return 0
    if part == "outputs":
        client.delete(keys.latest(user_id))
    else:
        client.delete(keys.latest(user_id), keys.profile(user_id))
    return sum(scan_user_entries(client, stream, user_id, scan_chunk=scan_chunk)
               for stream in (keys.recs, keys.dlq))


def confirm_erasure(client: redis.Redis, keys, erase: EraseUser, now: float) -> bool:
    """Record that ``erase`` (a part carrying a receipt) has been executed; once every
    part has, append ``receipt``, ``user_id``, ``completed_at`` to ``{prefix}:erasures``.

    Returns True when this call wrote the receipt. Call it only after the part's
    deletions have succeeded.
    """
    script = client.register_script(_CONFIRM_ERASURE)
    wrote = script(keys=[keys.erasure(erase.user_id, erase.receipt), keys.erasures],
                   args=[erase.part, RECEIPT_PENDING_TTL, ERASURES_MAXLEN, erase.receipt,
                         erase.user_id, repr(now)])
    return bool(wrote)


class ErasureScanner:
    """A thread that finishes noted erasures (:func:`mark_erasure`): the user's stream
    entries up to the marks, then the receipt, then the note.

    With ``resume``, it first takes up the notes a stopped worker left (one worker of a
    cluster does; a note taken twice is scanned twice, which is harmless). Every Redis
    error is retried with backoff for as long as it takes (the note stays in Redis
    meanwhile; ``streamrec_erasures_pending`` stays up), and logged once per kind of error.
    """

    def __init__(self, make_client: Callable[[], redis.Redis], keys, url: str,
                 confirm: Callable[[redis.Redis, EraseUser], bool],
                 backoff: ExponentialBackoff | None = None) -> None:
        self.make_client = make_client
        self.keys = keys
        self.url = url
        self.confirm = confirm
        self.backoff = backoff or ExponentialBackoff(cap=5.0, base=0.1)
        self.tasks: queue.Queue = queue.Queue()
        self.idle = threading.Condition()
        self.open = 0  # tasks queued and not finished
        # Notes queued and not finished: the notes read at start skip these (the sink may
        # note an erasure of its first batch before the thread has read what was left).
        self.queued: set[bytes] = set()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.client: redis.Redis | None = None

    def start(self, resume: bool = True) -> "ErasureScanner":
        """Start the thread; with ``resume``, it first takes up the notes left in Redis
        (in the thread, so a Redis that is down at start does not hold the worker)."""
        self.client = self.make_client()
        if resume:
            with self.idle:
                self.open += 1  # the notes to read count as a task: wait() waits for them
        self.thread = threading.Thread(target=self._run, args=(resume,),
                                       name="streamrec-erasure-scan", daemon=True)
        self.thread.start()
        return self

    def submit(self, erase: EraseUser, field: bytes, recs_end: str, dlq_end: str,
               known: tuple[list[str], str | None] | None = None) -> None:
        """Queue the scan of a noted erasure (``field`` names its note).

        ``known``: the user's recs-stream entry ids the sink wrote, and the id from which
        on it knows them all (``RecsIndex.bound``): those are deleted by id, and only the
        part of the stream before that id is scanned, if it still holds any.
        None: the whole stream up to ``recs_end`` is scanned."""
        with self.idle:
            if field in self.queued:
                return  # noted by this sink and read back at start: queued once
            self.queued.add(field)
            self.open += 1
        ERASURES_PENDING.inc()
        self.tasks.put((erase, field, recs_end, dlq_end, known))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every erasure submitted so far is done; False on timeout."""
        with self.idle:
            return self.idle.wait_for(lambda: self.open == 0, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued (up to ``timeout`` seconds, less when Redis is out: what
        is left stays noted in Redis for the next start), then stop the thread."""
        if self.thread is None:
            return
        if not self.wait(timeout):
            log.warning("stopping with %d erasure scan(s) unfinished; they stay noted on %s "
                        "and the next worker to start finishes them", self.open, self.keys.erasing)
        self.stopping.set()
        self.tasks.put(None)
        self.thread.join(timeout=5.0)
        self.thread = None
        if self.client is not None:
            self.client.close()

    def _resume(self) -> None:
        left = self._retried(lambda: self.client.hgetall(self.keys.erasing))
        if left is None:
            return
        taken = 0
        for field, ends in sorted(left.items(), key=lambda kv: kv[1]):  # oldest marks first
            try:
                erase = _erasure_of(field)
            except (ValueError, TypeError):
                log.warning("dropping an unreadable note on %s", self.keys.erasing)
                self._retried(lambda f=field: self.client.hdel(self.keys.erasing, f))
                continue
            recs_end, _, dlq_end = ends.decode().partition(" ")
            self.submit(erase, field, recs_end, dlq_end)
            taken += 1
        if taken:
            log.info("taking up %d erasure(s) a stopped worker had not finished", taken)

    def _run(self, resume: bool) -> None:
        if resume:
            try:
                self._resume()
            finally:
                with self.idle:
                    self.open -= 1
                    self.idle.notify_all()
        while True:
            task = self.tasks.get()
            if task is None:
                return
            try:
                self._retried(lambda: self._finish(*task))
            finally:
                ERASURES_PENDING.dec()
                with self.idle:
                    self.queued.discard(task[1])
                    self.open -= 1
                    self.idle.notify_all()

    def _finish(self, erase: EraseUser, field: bytes, recs_end: str, dlq_end: str,
                known: tuple[list[str], str | None] | None = None) -> None:
        client, keys = self.client, self.keys
        started = time.monotonic()
        n = 0
        scanned = False
        if recs_end:
            scan_to: str | None = recs_end
            if known is not None:
                ids, bound = known
                n += delete_entries(client, keys.recs, ids)
                if bound is not None:
                    scan_to = unknown_part(client, keys.recs, bound, recs_end)
            if scan_to:
                n += scan_user_entries(client, keys.recs, erase.user_id, scan_to)
                scanned = True
                ERASURE_SCANS.inc()
        if dlq_end:  # any worker may write a user's dead letters: always scanned
            n += scan_user_entries(client, keys.dlq, erase.user_id, dlq_end)
        log.info("erased a user (%s): %d stream entries removed in %.0f ms (recs stream %s)",
                 erase.part, n, 1e3 * (time.monotonic() - started),
                 "scanned" if scanned else "not scanned")
        if erase.receipt is not None and self.confirm(client, erase):
            log.info("erasure confirmed on %s", keys.erasures)
        client.hdel(keys.erasing, field)

    def _retried(self, work: Callable[[], object]) -> object | None:
        """``work()`` until it succeeds; None when the scanner is stopped meanwhile."""
        attempt = 0
        seen: set[str] = set()
        while not self.stopping.is_set():
            try:
                result = work()
            except Exception as ex:  # noqa: BLE001 - any error: the note stays, retry
                attempt += 1
                kind = type(ex).__name__
                if kind not in seen:
                    seen.add(kind)
                    log.warning("the erasure scan failed on Redis at %s (%s: %s); retrying "
                                "until it succeeds", redact_url(self.url), kind, ex)
                if isinstance(ex, redis.exceptions.ReadOnlyError):
                    self.client.connection_pool.disconnect()  # reconnect: maybe to the new primary
                self.stopping.wait(self.backoff.compute(attempt))
                continue
            if attempt:
                log.info("the erasure scan succeeded after %d retries", attempt)
            return result
        return None
