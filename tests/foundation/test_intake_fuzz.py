"""Property: whatever the body and headers, the intake endpoint answers 2xx/4xx, never 5xx."""

import json
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.helpers import DEMO_SECRET, sign_webhook

json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_value = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12,
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "customer": st.one_of(
            json_value,
            st.fixed_dictionaries(
                {"email": st.one_of(st.emails(), st.text(max_size=40), json_leaf)},
                optional={"name": st.one_of(st.text(max_size=40), json_leaf), "external_id": json_leaf},
            ),
        ),
        "subject": st.one_of(st.text(max_size=400), json_leaf),
        "body": st.one_of(st.text(max_size=200), json_leaf),
        "channel": st.one_of(st.sampled_from(["email", "chat", "web", "fax", ""]), json_leaf),
        "metadata": json_value,
    },
)
# Nearly valid deliveries so the accepted path also sees odd unicode, metadata and names.
plausible = st.fixed_dictionaries(
    {
        "customer": st.fixed_dictionaries({"email": st.emails()}, optional={"name": st.text(max_size=60)}),
        "body": st.text(min_size=1, max_size=300),
    },
    optional={
        "subject": st.text(max_size=300),
        "channel": st.sampled_from(["email", "chat", "web"]),
        "metadata": st.dictionaries(st.text(max_size=10), json_value, max_size=4),
    },
)
raw_bodies = st.one_of(
    plausible.map(lambda p: json.dumps(p, allow_nan=True).encode()),
    plausible.map(lambda p: json.dumps(p, allow_nan=True).encode()),
    payloads.map(lambda p: json.dumps(p, allow_nan=True).encode()),
    st.binary(max_size=300),
    json_value.map(lambda v: json.dumps(v).encode()),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)


@pytest.mark.django_db
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=raw_bodies,
    sign_it=st.sampled_from([True, True, True, False]),
    msg_id=st.one_of(
        st.uuids().map(str),
        st.uuids().map(str),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=300),
        header_text,
    ),
    skew=st.sampled_from([0, 0, 0, 0, -400, 400]),
    junk_headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]), header_text, max_size=3
    ),
    content_type=st.sampled_from(
        ["application/json", "application/json", "application/json; charset=utf-8", "text/plain", ""]
    ),
    source=st.sampled_from(["demo", "demo", "demo", "missing"]),
)
def test_intake_never_answers_5xx(
    client, intake_source, raw, sign_it, msg_id, skew, junk_headers, content_type, source
):
    ts = int(time.time()) + skew
    headers = dict(junk_headers)
    if sign_it:
        headers.update(
            {
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign_webhook(DEMO_SECRET, msg_id, ts, raw),
            }
        )
    resp = client.post(f"/api/intake/{source}/", data=raw, content_type=content_type, headers=headers)
    event(f"status {resp.status_code}")
    assert 200 <= resp.status_code < 500, (resp.status_code, resp.content[:300])
    if resp.status_code >= 400:
        assert resp.json()["detail"]
