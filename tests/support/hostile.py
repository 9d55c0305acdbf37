"""Hypothesis strategies for hostile input: malformed, oversized, wrongly typed and hostile events,
JSON and text (OData quote tricks, key separators, path tricks). Pure: the unit tier feeds them to
the parser, the integration tier to the webhook and the API."""

from __future__ import annotations

from hypothesis import strategies as st

from shared.conventions import container_name

from ..helpers import blob_event

SENTINEL = "sentinel-job"
SENTINEL_CONTAINER = container_name(SENTINEL)
TARGET = "target-job"

HOSTILE_TEXT = st.sampled_from([
    "x' or '1'='1", "' or PartitionKey ne '", "x') or (true", "%27%20or%201%20eq%201", "../", "..%2F..%2F",
    "/blobServices/default/containers/" + SENTINEL_CONTAINER + "/blobs/$JobOutput/a", SENTINEL_CONTAINER,
    "a\x00b", "\u202e", "🙂", "%", "#?", "|", "S|00", "Q|maxOutputs", "U|t1", "~jobs", " ", "", "$JobOutput",
    "T|TaskOutput|t1|x", "a" * 1100,
])
TEXT = st.one_of(HOSTILE_TEXT, st.text(max_size=80))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
WRONG = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80), st.floats(), TEXT,
                  st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))

CONTAINERS = st.one_of(
    st.just(container_name(TARGET)), st.just(container_name("job:with-colon")), TEXT,
    st.builds(lambda s: "job-" + s, st.text(alphabet="abc-_:'./", max_size=20)),
)
BLOB_NAMES = st.one_of(
    TEXT,
    st.builds(lambda t, k, p: f"{t}/${k}/{p}", TEXT, TEXT, TEXT),
    st.builds(lambda k, p: f"${k}/{p}", TEXT, TEXT),
)


@st.composite
def hostile_events(draw: st.DrawFn) -> dict:
    event = blob_event(draw(CONTAINERS), draw(BLOB_NAMES), deleted=draw(st.booleans()),
                       sequencer=draw(st.integers(min_value=0, max_value=10**20)),
                       schema=draw(st.sampled_from(["eventgrid", "cloudevents"])))
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["top", "data"]))
        target = event["data"] if where == "data" and isinstance(event.get("data"), dict) else event
        key = draw(st.sampled_from([*sorted(target), "extra"]))
        if draw(st.booleans()):
            target[key] = draw(WRONG)
        else:
            target.pop(key, None)
    if draw(st.booleans()):
        event["subject"] = draw(st.one_of(TEXT, st.builds(lambda c, b: f"/blobServices/default/containers/{c}/blobs/{b}", TEXT, TEXT)))
    return event
