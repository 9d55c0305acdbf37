"""The index's key layout in Table storage (pure functions, no I/O).

One partition per job container: every row a job's ingest touches (its outputs, its task
rows, its counter shards) shares a PartitionKey, so one batch transaction can change outputs
and their counters atomically, with ETag conditions. Row keys put the kind before the task:

    J|{kind}|{path}             a job output
    T|{kind}|{task}|{path}      a task output  ->  every task's previews = one key range
    U|{task}                    a task's usage (outputs and bytes per kind)
    S|00                        the job's folded counters (usage, per-kind totals, quota overrides)
    S|d|{id}                    a usage delta, created with the outputs it counts (ledger.py)
    S|e|{writer}                quota headroom one writer holds in escrow
    S|f                         the fold round in progress
    S|g                         a spread job's grant row: its job-wide limits' allotments (allotment.py)
    Q|{limit}                   a quota crossing already announced (QuotaExceeded sent)
    F|{seq}                     the change feed: the changes of one folded delta, in feed order

Jobs themselves are listed from the ``~jobs`` partition, one row per container; the
reconciler keeps each job's sweep position in ``~reconcile`` and long-running operations
(reindexes answered 202) live in ``~operations``.

Table keys may not hold ``/ \\ # ?`` or control characters; text is percent-encoded for those
(and for ``%`` and the ``|`` separator), which keeps prefixes prefixes, so a path prefix
filter is a key range too.
"""

from __future__ import annotations

import functools
import hashlib

JOBS_PARTITION = "~jobs"
#: One row per job container: where the reconciler's sweep of that job stands.
RECONCILE_PARTITION = "~reconcile"
#: One row per long-running operation (a reindex answered 202), by its ID.
OPERATIONS_PARTITION = "~operations"
SEPARATOR = "|"
JOB_OUTPUT = "J"
TASK_OUTPUT = "T"
TASK_USAGE = "U"
SHARD = "S"
QUOTA_CROSSING = "Q"
FEED = "F"
#: Feed seqs are written with this many digits, so that key order is seq order.
FEED_DIGITS = 16

#: Counter rows ``S|00``..``S|15`` an older version spread usage over; only ``S|00`` is written
#: now (usage moves through delta rows), and a summary still sums any of them it finds.
SHARD_COUNT = 16
DELTA = "d"
ESCROW = "e"
FOLD_ROUND = "f"
GRANT = "g"

#: Table storage keys hold at most 1 KiB, counted in UTF-16: 512 code units (Azurite refuses
#: 513 "a"s and 257 emoji, as Azure does). A blob name may be 1,024 characters and a kind any
#: length, so a longer key keeps its first units (sort order and prefixes hold) and ends in a
#: hash of the whole key (it stays unique); the full names are properties of the row.
MAX_KEY_UNITS = 512
_HASH_SUFFIX_UNITS = 2 + 40  # "|h" + SHA-1 hex
#: A prefix this short is a prefix of every key that starts with it, hashed or not.
MAX_EXACT_PREFIX_UNITS = MAX_KEY_UNITS - _HASH_SUFFIX_UNITS - 3
#: What ``encode`` escapes (the separators, control characters, lone surrogates) and how.
_ESCAPES = {
    code: "".join(f"%{b:02X}" for b in chr(code).encode("utf-8", "surrogatepass"))
    for code in (*map(ord, "%|/\\#?"), *range(0x20), *range(0x7F, 0xA0), *range(0xD800, 0xE000))
}


def encode(text: str) -> str:
    """Percent-encode the characters Table keys cannot hold (and the separator)."""
    return text.translate(_ESCAPES)


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _cut(key: str, units: int) -> str:
    """The longest start of ``key`` within ``units`` that splits no ``%XX`` escape."""
    out: list[str] = []
    used = 0
    for ch in key:
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > units:
            break
        out.append(ch)
    cut = "".join(out)
    tail = cut[-2:]
    if "%" in tail:
        cut = cut[: len(cut) - len(tail) + tail.index("%")]
    return cut


def bounded(key: str) -> str:
    """``key`` itself when Table storage can hold it, else its start plus a hash of it."""
    if utf16_units(key) <= MAX_KEY_UNITS:
        return key
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{_cut(key, MAX_KEY_UNITS - _HASH_SUFFIX_UNITS)}{SEPARATOR}h{digest}"


def clip_prefix(prefix: str) -> tuple[str, bool]:
    """A key prefix short enough to match hashed keys too; ``True`` when it was clipped
    (the caller must then check each row's own properties)."""
    if utf16_units(prefix) <= MAX_EXACT_PREFIX_UNITS:
        return prefix, False
    return _cut(prefix, MAX_EXACT_PREFIX_UNITS), True


@functools.lru_cache(maxsize=4096)  # a job's task IDs recur once per output
def task_key(task_id: str) -> str:
    """Batch task IDs are case-insensitive: rows are keyed by the lower-cased ID."""
    return encode(task_id.lower())


def job_output_key(kind: str, path: str) -> str:
    return bounded(SEPARATOR.join((JOB_OUTPUT, encode(kind), encode(path))))


#: Marks the exact spelling of a task ID that is not all lower case, at the end of its output keys.
CASE = "c"


def task_output_key(kind: str, task_id: str, path: str) -> str:
    """A task output's row. Batch task IDs are case-insensitive, so a task's outputs share the
    lower-cased ID (one task, one key range); blob names are case-sensitive, so ``T1/...`` and
    ``t1/...`` are two blobs, and an ID spelt with capitals ends the key with its spelling."""
    key = SEPARATOR.join((TASK_OUTPUT, encode(kind), task_key(task_id), encode(path)))
    if task_id != task_id.lower():
        key = SEPARATOR.join((key, CASE + encode(task_id)))
    return bounded(key)


def output_key(kind: str, path: str, task_id: str | None = None) -> str:
    """The row of an output: a task output when ``task_id`` is given, else a job output."""
    return task_output_key(kind, task_id, path) if task_id else job_output_key(kind, path)


def output_ranges() -> tuple[tuple[str, str], tuple[str, str]]:
    """The key ranges of every job output and of every task output."""
    return prefix_range(JOB_OUTPUT + SEPARATOR), prefix_range(TASK_OUTPUT + SEPARATOR)


def outputs_span() -> tuple[str, str]:
    """One range from the first job output to the last task output.

    It spans the quota and counter rows (``Q|``, ``S|``) too: query it only with a filter
    on ``State``, which those rows do not carry.
    """
    return JOB_OUTPUT + SEPARATOR, prefix_range(TASK_OUTPUT + SEPARATOR)[1]


def task_usage_key(task_id: str) -> str:
    return f"{TASK_USAGE}{SEPARATOR}{task_key(task_id)}"


def shard_key(shard: int) -> str:
    return f"{SHARD}{SEPARATOR}{shard:02d}"


def quota_crossing_key(limit: str) -> str:
    return f"{QUOTA_CROSSING}{SEPARATOR}{encode(limit)}"


def prefix_range(prefix: str) -> tuple[str, str]:
    """The half-open key range ``[low, high)`` of every key that starts with ``prefix``.

    Table storage (and Azurite) order keys by UTF-16 code unit, so ``high`` is the prefix with
    its last character replaced by the next one in that order (a trailing U+FFFF carries to the
    character before): U+10FFFF has no ``chr(ord(c) + 1)`` at all, and U+D7FF's would be a lone
    surrogate. ``high`` is always a valid string, so it can be sent in a filter.
    """
    if not prefix:
        raise ValueError("empty prefix")
    chars = list(prefix)
    while chars:
        code = ord(chars.pop())
        if code == 0xFFFF:
            continue  # the last unit there is: carry to the character before
        if code == 0xD7FF:
            successor = 0x10000  # the first character whose units start with D800
        elif code == 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            successor = 0xE000  # the first unit above the surrogates
        else:
            successor = code + 1  # for characters past U+FFFF, code point order is unit order
        return prefix, "".join(chars) + chr(successor)
    raise ValueError("no key sorts above a prefix of U+FFFF characters only")


def job_outputs_prefix(kind: str | None = None, path_prefix: str = "") -> str:
    if kind is None:
        return JOB_OUTPUT + SEPARATOR
    return SEPARATOR.join((JOB_OUTPUT, encode(kind), encode(path_prefix)))


def task_outputs_prefix(kind: str | None = None, task_id: str | None = None, path_prefix: str = "") -> str:
    """Prefix of task outputs: all, of one kind, or of one kind and task (then a path prefix)."""
    if kind is None:
        return TASK_OUTPUT + SEPARATOR
    if task_id is None:
        return SEPARATOR.join((TASK_OUTPUT, encode(kind), ""))
    return SEPARATOR.join((TASK_OUTPUT, encode(kind), task_key(task_id), encode(path_prefix)))


def task_usage_prefix() -> str:
    return TASK_USAGE + SEPARATOR


def shard_prefix() -> str:
    return SHARD + SEPARATOR


def counter_key() -> str:
    """The job's folded counters (and its quota overrides)."""
    return shard_key(0)


def delta_key(delta_id: str) -> str:
    return SEPARATOR.join((SHARD, DELTA, delta_id))


def delta_prefix() -> str:
    return SEPARATOR.join((SHARD, DELTA, ""))


def escrow_key(writer: str) -> str:
    return SEPARATOR.join((SHARD, ESCROW, writer))


def escrow_prefix() -> str:
    return SEPARATOR.join((SHARD, ESCROW, ""))


def fold_round_key() -> str:
    return SEPARATOR.join((SHARD, FOLD_ROUND))


def grant_key() -> str:
    """A spread job's grant row (in the container's partition): what each partition was granted."""
    return SEPARATOR.join((SHARD, GRANT))


def feed_key(seq: int) -> str:
    """The feed row of ``seq`` (zero-padded: key order is seq order)."""
    return f"{FEED}{SEPARATOR}{seq:0{FEED_DIGITS}d}"


def feed_prefix() -> str:
    return FEED + SEPARATOR


def feed_seq(row_key: str) -> int:
    return int(row_key[len(feed_prefix()):])


# -- a job's partitions (a hot job's index spread over several) -------------------------------

#: Between a job's container and a partition's number in the PartitionKey of its partitions
#: after the first (container names hold lower-case letters, digits and ``-`` only).
PARTITION_MARK = SEPARATOR
#: The most partitions one job may be spread over.
MAX_PARTITIONS = 16
#: The job registry row's property holding the job's number of partitions (absent: one).
PARTITIONS = "Partitions"


def partition_of(container: str, index: int) -> str:
    """The PartitionKey of a job's partition ``index``: the container itself for the first, so a
    one-partition job keeps its one partition, ``{container}|{index}`` for the others."""
    return container if index == 0 else f"{container}{PARTITION_MARK}{index}"


def container_of(partition: str) -> str:
    """The job container a partition belongs to."""
    return partition.split(PARTITION_MARK, 1)[0]


def partition_index(partition: str) -> int:
    """The number of a job's partition (0 for the container's own)."""
    _, _, index = partition.partition(PARTITION_MARK)
    return int(index) if index else 0


def task_slot(encoded_task: str, partitions: int) -> int:
    """Which of ``partitions`` holds a task (``encoded_task`` as in keys: ``task_key``): a
    stable hash, so any instance, reader or writer, finds the task at the same place."""
    if partitions <= 1:
        return 0
    return int.from_bytes(hashlib.sha1(encoded_task.encode("utf-8", "surrogatepass")).digest()[:4], "big") % partitions

