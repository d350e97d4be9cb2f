"""The benchmarks' pure parts: the API load's addresses, flows and status counts (bench/apiload.py),
the throughput rows (bench/throughput.py) and their table (bench/readme.py). No lab: the flow runs
against httpx's MockTransport."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import apiload, chaos, cis, readme, throughput
from bench.apiload import Credentials, Record, Recorder, Target

CREDENTIALS = Credentials(("api", "a-secret"), ("admin", "b-secret"))
TARGET = Target(api="http://api.test/api", mail="http://mail.test")


def test_addresses_are_distinct_within_a_run_and_between_runs() -> None:
    first, second = apiload.addresses("r1", "o", 3000), apiload.addresses("r2", "o", 3000)
    assert len(set(first)) == 3000
    assert not set(first) & set(second)
    assert not set(first) & set(apiload.addresses("r1", "f", 3000)), "getotp and flow addresses of a run differ"
    assert all(a.count("@") == 1 and a.endswith("@example.org") for a in first)


def test_batches_keep_every_address_once_and_stay_within_the_api_limit() -> None:
    emails = apiload.addresses("r", "o", 25_001)
    chunks = list(apiload.batches(emails))
    assert [len(c) for c in chunks] == [10_000, 10_000, 5_001]
    assert [e for c in chunks for e in c] == emails


def records(*rows: tuple[str, int, float, str, str]) -> list[Record]:
    return [Record(0.0, kind, status, ms, error, answer) for kind, status, ms, error, answer in rows]


def test_summarize_counts_every_answer_and_times_only_the_answered() -> None:
    got = apiload.summarize(
        records(
            *[("getotp", 200, float(ms), "", "sent") for ms in range(1, 101)],
            ("getotp", 429, 5.0, "", "rate_limited"),
            ("getotp", 0, 60_000.0, "ReadTimeout", ""),
            ("authen", 200, 1.0, "", "ok"),
        ),
        "getotp",
    )
    assert got["requests"] == 102
    assert got["statuses"] == {"0 ReadTimeout": 1, "200 sent": 100, "429 rate_limited": 1}
    # The timeout is no latency (it would be the p99 otherwise); the 429 is one.
    assert got["p99_ms"] < 1000 and 45 < got["p50_ms"] < 55


def test_quantiles_of_few_values() -> None:
    assert apiload.quantiles([]) == (0.0, 0.0)
    assert apiload.quantiles([7.0]) == (7.0, 7.0)


def test_flows_result_counts_registered_flows_per_second_and_every_step() -> None:
    rows = records(
        ("eligible", 200, 10.0, "", "added,rejected,total"),
        ("getotp", 200, 20.0, "", "sent"),
        ("mail", 200, 5.0, "", ""),
        ("authen", 200, 8.0, "", "ok"),
        ("register", 200, 30.0, "", "student_id"),
        ("flow", 200, 80.0, "", ""),
        ("eligible", 200, 10.0, "", "added,rejected,total"),
        ("getotp", 503, 20.0, "", "unavailable"),
        ("flow", 0, 40.0, "", ""),
    )
    got = apiload.flows_result(rows, 2.0)
    assert (got["flows_completed"], got["flows_started"], got["flows_per_s"]) == (1, 2, 0.5)
    assert got["rps"] == 3.0, "six API requests in 2 s (the mail sink's reads are not the API's)"
    assert got["steps"]["getotp"]["statuses"] == {"200 sent": 1, "503 unavailable": 1}
    assert got["steps"]["register"]["requests"] == 1
    assert set(got["steps"]) == set(apiload.STEPS)


def mock_api(seen: list[tuple[str, str, Any]], getotp_status: int = 200) -> httpx.MockTransport:
    """The API and the mail sink as a flow sees them; the mail carries the code 123456."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, str(request.url.copy_with(query=None)), body))
        path = request.url.path
        if path == "/messages":
            return httpx.Response(200, json=[{"body": "Your code is 123456."}])
        if path == "/api/getotp":
            return httpx.Response(getotp_status, json={"results": "sent" if getotp_status == 200 else "unavailable"})
        if path == "/api/authen":
            ok = body == {"email": "s@example.org", "otp": "123456"}
            return httpx.Response(200 if ok else 401, json={"results": "ok", "proof": "p-1"})
        if path == "/api/register":
            return httpx.Response(200, json={"results": {"student_id": 1}})
        return httpx.Response(200, json={"results": {"added": 1, "rejected": [], "total": 1}})

    return httpx.MockTransport(handle)


def test_a_flow_goes_eligible_getotp_mail_authen_register_with_the_mailed_code() -> None:
    seen: list[tuple[str, str, Any]] = []
    recorder = Recorder(0.0, answers=True)
    with httpx.Client(transport=mock_api(seen)) as client:
        done = apiload.flow(
            recorder, client, TARGET, "s@example.org", CREDENTIALS, stop=threading.Event(), record_mail=True
        )
    assert done
    assert [url for _, url, _ in seen] == [
        "http://api.test/api/create_email_list",
        "http://api.test/api/getotp",
        "http://mail.test/messages",
        "http://api.test/api/authen",
        "http://api.test/api/register",
    ]
    assert seen[-1][2]["proof"] == "p-1", "register carries authen's proof"
    assert [(r.kind, r.status, r.answer) for r in recorder.records] == [
        ("eligible", 200, "added,rejected,total"),
        ("getotp", 200, "sent"),
        ("mail", 200, ""),
        ("authen", 200, "ok"),
        ("register", 200, "student_id"),
    ]


def test_a_refused_step_ends_the_flow_and_is_recorded() -> None:
    seen: list[tuple[str, str, Any]] = []
    recorder = Recorder(0.0, answers=True)
    with httpx.Client(transport=mock_api(seen, getotp_status=503)) as client:
        assert not apiload.flow(recorder, client, TARGET, "s@example.org", CREDENTIALS, stop=threading.Event())
    assert [(r.kind, r.status, r.answer) for r in recorder.records] == [
        ("eligible", 200, "added,rejected,total"),
        ("getotp", 503, "unavailable"),
    ]
    assert len(seen) == 2, "no mail read, no authen after a refused getotp"


def cut_then_answered(cuts: int, keys: list[str]) -> httpx.MockTransport:
    """A server whose first `cuts` answers are connections closed without a reply (its node died)."""

    def handle(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("idempotency-key", ""))
        if len(keys) <= cuts:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json={"results": "sent"})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(("cuts", "status", "tries"), [(0, 200, 1), (2, 200, 3), (3, 0, 3)])
def test_a_cut_flow_post_is_sent_again_with_its_key_and_recorded_once(cuts: int, status: int, tries: int) -> None:
    keys: list[str] = []
    recorder = Recorder(0.0)
    with httpx.Client(transport=cut_then_answered(cuts, keys)) as client:
        response = recorder.call(
            client, "getotp", "POST", "http://api.test/api/getotp", headers={"Idempotency-Key": "k-1"}, repeats=2
        )
    assert (response.status_code if response else 0) == status
    assert [(r.kind, r.status, r.tries) for r in recorder.records] == [("getotp", status, tries)]
    assert keys == ["k-1"] * tries, "every try carries the same key"


HAPROXY_503 = (
    "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n"
)


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (httpx.Response(503, json={"results": "backend_unavailable"}), "backend_unavailable"),
        (
            httpx.Response(503, text=HAPROXY_503),
            "503 Service Unavailable No server is available to handle this request.",
        ),
        (httpx.Response(502), "(empty body)"),
    ],
)
def test_a_5xx_records_who_said_it_even_when_answers_are_not_parsed(reply: httpx.Response, said: str) -> None:
    recorder = Recorder(0.0)  # as make chaos records: no `results` parsed for the answered
    with httpx.Client(transport=httpx.MockTransport(lambda request: reply)) as client:
        recorder.call(client, "getotp", "POST", "http://api.test/api/getotp")
    assert [(r.status, r.answer) for r in recorder.records] == [(reply.status_code, said)]


def test_the_chaos_summary_lists_each_failure_with_its_latency_and_who_said_it() -> None:
    records = [
        Record(1.0, "getotp", 200, 30.0),
        Record(9.5, "getotp", 503, 39_950.4, answer="backend_unavailable"),
        Record(9.6, "register", 0, 15_000.0, error="ReadTimeout"),
    ]
    got = chaos._summary(records, lambda kind: kind != "get")
    assert got["failed"] == 2
    assert got["failures"] == [
        {"at_s": 9.5, "kind": "getotp", "status": 503, "ms": 39950, "said": "backend_unavailable"},
        {"at_s": 9.6, "kind": "register", "status": 0, "ms": 15000, "said": "ReadTimeout"},
    ]


def test_every_post_of_a_flow_has_a_key_of_its_own() -> None:
    keys: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            keys.append(request.headers.get("idempotency-key", ""))
        return mock_api([]).handle_request(request)

    with httpx.Client(transport=httpx.MockTransport(handle)) as client:
        assert apiload.flow(Recorder(0.0), client, TARGET, "s@example.org", CREDENTIALS, stop=threading.Event())
    assert len(keys) == 4 and all(keys) and len(set(keys)) == 4


def test_comparison_keeps_the_median_round_of_each_mode_and_their_ratio() -> None:
    rounds = {
        "haproxy": [{"flows_per_s": 8.0, "p99_ms": 1}, {"flows_per_s": 6.0, "p99_ms": 2}, {"flows_per_s": 9.0}],
        "direct": [{"flows_per_s": 10.0, "p99_ms": 3}, {"flows_per_s": 12.0}, {"flows_per_s": 2.0}],
    }
    row = throughput.comparison(rounds, "flows_per_s")
    assert row["haproxy"] == {"flows_per_s": 8.0, "p99_ms": 1}
    assert row["direct_all_workers"] == {"flows_per_s": 10.0, "p99_ms": 3}
    assert row["haproxy_over_direct"] == 0.8
    assert row["rounds_flows_per_s"] == {"haproxy": [8.0, 6.0, 9.0], "direct": [10.0, 12.0, 2.0]}
    assert throughput.comparison({"haproxy": [{"rps": 1.0}], "direct": [{"rps": 0.0}]})["haproxy_over_direct"] is None


def test_a_per_client_limit_below_the_runs_requests_stops_the_bench_naming_the_value() -> None:
    throughput.check_client_budget(100_000)
    throughput.check_client_budget(0)  # no limit
    with pytest.raises(SystemExit, match=r"otp_rate_per_client is 50 in workloads/registration/values/lab\.yaml"):
        throughput.check_client_budget(50)


def side(key: str, value: float, **extra: Any) -> dict[str, Any]:
    return {key: value, "p50_ms": 1.0, "p99_ms": 2.0, **extra}


def test_the_numbers_table_shows_each_paths_unit_and_the_apis_answers() -> None:
    steps = {s: {"statuses": {"200 ok": 3}, "p50_ms": 1.0, "p99_ms": 2.0} for s in apiload.STEPS}
    report = {
        "machine": {"load_average": [1.0, 2.0, 3.0]},
        "mode": "m",
        "api_mode": "a",
        "load_average_at_start": [0.5, 0.5, 0.5],
        "results": {
            "ui": {
                "haproxy": side("rps", 900.0),
                "direct_all_workers": side("rps", 1000.0),
                "haproxy_over_direct": 0.9,
            },
            "api_getotp": {
                "haproxy": side("rps", 20.0, statuses={"200 sent": 200}),
                "direct_all_workers": side("rps", 25.0, statuses={"200 sent": 250, "429 rate_limited": 1}),
                "haproxy_over_direct": 0.8,
            },
            "api_flows": {
                "haproxy": side("flows_per_s", 5.0, steps=steps),
                "direct_all_workers": side("flows_per_s", 6.0, steps=steps),
                "haproxy_over_direct": 0.83,
            },
        },
    }
    text = "\n".join(readme._throughput(report, "bench"))
    assert "| ui | 900.0 req/s |" in text and "| api_flows | 5.0 flows/s |" in text
    assert "| api_getotp | getotp | 200 sent: 200 | 200 sent: 250, 429 rate_limited: 1 |" in text
    assert "| api_flows | register | 200 ok: 3 (1.0 / 2.0 ms) |" in text
    assert "at the start [0.5, 0.5, 0.5], at the end [1.0, 2.0, 3.0]" in text


def test_the_cis_summary_counts_the_chosen_sections_and_names_each_warn() -> None:
    """A docker-bench-security JSON log recorded on a lab worker (sections 2 and 7 of it)."""
    report = json.loads((Path(__file__).parent / "fixtures" / "docker-bench-security.json").read_text())
    daemon = cis.summarize(report, ("2",))
    assert daemon["sections"] == {"2": "Docker daemon configuration"}
    assert daemon["counts"] == {"PASS": 8, "WARN": 6, "INFO": 4, "NOTE": 0}
    assert {"2.2", "2.14", "2.16"} <= {w["id"] for w in daemon["warn"]} and len(daemon["warn"]) == 6
    both = cis.summarize(report, ("2", "7"))
    assert both["counts"] == {"PASS": 9, "WARN": 9, "INFO": 8, "NOTE": 1}
    assert cis.summarize(report, ("9",))["counts"] == {"PASS": 0, "WARN": 0, "INFO": 0, "NOTE": 0}
