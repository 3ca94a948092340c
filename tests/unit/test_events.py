"""The operator's Events: what they say and what they point at."""

from __future__ import annotations

import asyncio
import datetime as dt

from toolshare.client.kube import ApiError
from toolshare.controller import metrics
from toolshare.controller.events import MAX_MESSAGE, Poster, event_body

RUN = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
       "metadata": {"name": "nb", "namespace": "team", "uid": "u-1", "resourceVersion": "42"}}


def test_an_event_names_the_run_by_uid_and_version_and_says_who_posted_it():
    when = dt.datetime(2026, 12, 4, 8, 0, 1, 250000, tzinfo=dt.timezone.utc)
    body = event_body(RUN, "Normal", "Shared", "RunShare s shares this run with bob", when, "op-0")
    assert body["metadata"] == {"generateName": "nb.", "namespace": "team"}
    assert body["involvedObject"] == {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun", "name": "nb",
                                      "namespace": "team", "uid": "u-1", "resourceVersion": "42"}
    assert (body["type"], body["reason"], body["count"]) == ("Normal", "Shared", 1)
    assert body["source"] == {"component": "toolshare"} and body["reportingInstance"] == "op-0"
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-12-04T08:00:01Z"
    assert body["eventTime"] == "2026-12-04T08:00:01.250000Z"


def test_a_long_message_is_cut_to_what_the_api_server_keeps():
    body = event_body(RUN, "Normal", "Shared", "x" * 5000, dt.datetime.now(dt.timezone.utc))
    assert len(body["message"]) == MAX_MESSAGE


def test_an_unnamed_instance_reports_as_the_component():
    # The API server answers 422 "reportingInstance: Required value" to an Event with an
    # eventTime and a reportingComponent but an empty instance (CI, stop 22).
    body = event_body(RUN, "Normal", "Shared", "m", dt.datetime.now(dt.timezone.utc), "")
    assert body["reportingInstance"] == body["reportingComponent"] == "toolshare"


def test_a_refused_post_is_logged_and_counted_not_raised(caplog):
    class Refusing:
        async def arequest(self, *args, **kwargs):
            raise ApiError(422, '{"kind":"Status","message":"Event \\"nb.x\\" is invalid"}')

    before = metrics.EVENTS_LOST._value.get()

    async def go():
        poster = Poster(Refusing(), "op-0")
        poster.post(RUN, "Normal", "Shared", "m")
        await poster.drain()

    asyncio.run(go())
    assert metrics.EVENTS_LOST._value.get() == before + 1
    assert 'could not post Shared Event on team/nb: Event "nb.x" is invalid' in caplog.text
