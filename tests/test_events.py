"""The event envelope: real emitted events validate against the shipped JSON Schema, broken ones do not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from cliplive.stream.events import SCHEMA_VERSION, HighlightEvent, Segment, load_schema
from cliplive.stream.segmenter import OnlineSegmenter


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def emitted() -> list[HighlightEvent]:
    """A real run: two queries, a rising bump with updates, one segment still open at close()."""
    segmenter = OnlineSegmenter(["a dog", "a red car"], stream="cam 1")
    relevance = np.full((60, 2), -3.0)
    relevance[10:30, 0] = np.linspace(0.0, 4.0, 20)
    relevance[50:, 1] = 2.0
    events = [e for i, r in enumerate(relevance) for e in segmenter.push(i / 3, r)]  # 3 fps: times like 0.333...
    return events + segmenter.close()


def valid_event(**changes) -> dict:
    event = HighlightEvent("new", "cam1-1", "cam1", 1.0, None, 0.9, "a dog", 0, 1.5).to_dict()
    event.update(changes)
    return event


def test_schema_documents_every_field():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    highlight = schema["$defs"]["highlight"]
    for properties in (schema["properties"], highlight["properties"]):
        assert all(spec.get("description") for spec in properties.values())
    assert set(highlight["required"]) | {"kind"} == set(highlight["properties"])


def test_emitted_events_validate(validator):
    events = emitted()
    assert {e.type for e in events} == {"new", "update", "end"}
    for event in events:
        line = event.to_json()
        assert "\n" not in line
        data = json.loads(line)
        assert data == event.to_dict()
        validator.validate(data)
        assert (data["schema"], data["version"], data["kind"]) == ("cliplive.event", SCHEMA_VERSION, "highlight")


def test_floats_are_rounded():
    event = HighlightEvent("end", "s-1", "s", 1 / 3, 2 / 3, 0.123456789, "q", 0, 0.5).to_dict()
    assert (event["start"], event["end"], event["score"]) == (0.333, 0.667, 0.1235)
    segment = Segment(1 / 3, 2 / 3, 0.987654321, "q", 1, 0.5, "s-2").to_dict()
    assert segment == {"start": 0.333, "end": 0.667, "score": 0.9877, "query": "q", "query_index": 1,
                       "best_frame_ts": 0.5, "id": "s-2"}


@pytest.mark.parametrize(
    "broken",
    [
        {"id": None},
        {"type": "start"},
        {"end": 3.0},  # a `new` event's end is null
        {"type": "update", "end": 3.0},
        {"type": "end", "end": None},  # an `end` event has its end
        {"score": 1.5},
        {"query_index": -1},
        {"start": "1.0"},
        {"version": 2},
        {"schema": "frigate.event"},
        {"kind": None},
    ],
)
def test_broken_events_fail(validator, broken):
    event = valid_event(**broken)
    for key in [k for k, v in broken.items() if v is None and k != "end"]:
        del event[key]  # None here means: the field is missing
    validator.validate(valid_event())
    assert not validator.is_valid(event)


def test_unknown_kinds_pass_so_v1_consumers_survive_new_event_kinds(validator):
    future = {"schema": "cliplive.event", "version": 1, "kind": "thumbnail", "stream": "cam1", "jpeg": "..."}
    assert validator.is_valid(future)
    assert validator.is_valid(valid_event(camera_zone="porch"))  # unknown fields are ignored too


def test_status_and_metrics_events_validate(validator):
    from cliplive.stream.events import StatusEvent, metrics_event

    status = StatusEvent("cam1", "reconnecting", {"attempt": 2, "delay": 1.5}).to_dict()
    assert validator.is_valid(json.loads(json.dumps(status)))
    assert not validator.is_valid({**status, "state": "sleeping"})
    assert not validator.is_valid({k: v for k, v in status.items() if k != "detail"})
    from cliplive.stream.pipeline import EncoderSnapshot, PipelineSnapshot, StreamSnapshot

    stream = StreamSnapshot("cam1", "live", input_fps=25.0, decoded_fps=1.0, sampled_fps=1.0, dropped=0, reconnects=1,
                            scored=9, failed=0, events=2, encoder_lag_p50_s=0.1, latency_p50_s=0.2, latency_p99_s=None)
    metrics = metrics_event(PipelineSnapshot([stream], EncoderSnapshot(3, 9, 3.0, 25.0)))
    assert validator.is_valid(metrics)
    assert not validator.is_valid({**metrics, "streams": "cam1"})
