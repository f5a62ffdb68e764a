"""REST API (TF Serving JSON formats) of the local server, on loopback."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from tfrec.serving.model_config import ModelEntry, MonitoringSettings


def call(port: int, path: str, body: object | None = None) -> tuple[int, dict | str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


@pytest.fixture
def rest_port(export_dir, start_server, free_port) -> int:
    start_server(
        [
            ModelEntry("retrieval", str(export_dir / "retrieval"), version_labels={"stable": 1}),
            ModelEntry("ranking", str(export_dir / "ranking")),
        ],
        rest_api_port=free_port,
        monitoring=MonitoringSettings(),
    )
    return free_port


def test_status_and_metadata(rest_port) -> None:
    status, body = call(rest_port, "/v1/models/retrieval")
    assert status == 200
    assert body == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    status, body = call(rest_port, "/v1/models/retrieval/labels/stable/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "retrieval", "version": "1"}
    inputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["k"]["dtype"] == "DT_INT32"


def test_predict_row_and_columnar_formats(rest_port) -> None:
    status, body = call(
        rest_port,
        "/v1/models/retrieval:predict",
        {"instances": [{"user_id": "u", "history": ["a"], "k": 2}]},
    )
    # u, history a -> b 5.01, c 4.01
    assert status == 200
    [row] = body["predictions"]
    assert row["item_ids"] == ["b", "c"]
    assert row["scores"] == pytest.approx([5.01, 4.01], rel=1e-6)
    status, body = call(
        rest_port,
        "/v1/models/ranking/versions/1:predict",
        {
            "inputs": {
                "user_id": ["u"],
                "history": [[{"b64": base64.b64encode(b"a").decode()}]],
                "candidates": [["a", "bb"]],
            }
        },
    )
    # candidate a: len 1 + 10 * 1 occurrence; bb: len 2
    assert status == 200 and body == {"outputs": [[11.0, 2.0]]}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/nope:predict", {"instances": [1]}, 404, "'nope' is not served"),
        ("/v1/models/retrieval/versions/9:predict", {"instances": [1]}, 404, "Specific"),
        ("/v1/models/retrieval:predict", {"instances": []}, 400, "non-empty list"),
        ("/v1/models/retrieval:predict", {"oops": 1}, 400, '"instances" or "inputs"'),
        (
            "/v1/models/retrieval:predict",
            {"inputs": {"user_id": ["u"], "history": [["a"]], "k": ["x"]}},
            400,
            "cannot convert",
        ),
        (
            "/v1/models/retrieval:predict",
            {"inputs": {"user_id": ["u"], "history": [["a"]], "k": [0]}},
            400,
            "k must be > 0",
        ),
        ("/v1/models/retrieval:classify", {"examples": []}, 501, "not implemented"),
    ],
)
def test_errors_map_to_http_statuses(rest_port, path, body, status, message) -> None:
    got_status, got = call(rest_port, path, body)
    assert got_status == status
    assert message in got["error"]


def test_prometheus_metrics(rest_port) -> None:
    call(rest_port, "/v1/models/retrieval")
    for name in ("nope", "nope2", "x" * 200):  # unknown names share one label
        call(rest_port, f"/v1/models/{name}")
    status, text = call(rest_port, "/monitoring/prometheus/metrics")
    assert status == 200
    unknown = 'api="REST GET",model_name="<unknown>",status="NOT_FOUND"} 3'
    assert f":tensorflow:serving:request_count{{{unknown}" in text
    assert 'model_name="retrieval",status="OK"} 1' in text
    assert "nope" not in text and "xxxx" not in text
