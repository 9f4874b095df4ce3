"""The dashboard's pure parts: language choice, the CSRF token binding, and the credits
chart's daily buckets and SVG."""
from __future__ import annotations

import datetime as dt

from starlette.requests import Request

from gateway.web.charts import spend_chart_svg, spend_per_day
from gateway.web.i18n import locale_for
from gateway.web.security import csrf_token_for


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "query_string": b""})


def test_language_comes_from_the_cookie_else_the_best_accepted_language() -> None:
    assert locale_for(_request({"Accept-Language": "fr-FR,ar;q=0.8,en;q=0.5"})).lang == "ar"
    assert locale_for(_request({"Accept-Language": "ar-EG;q=0.2,en-GB;q=0.9"})).lang == "en"
    assert locale_for(_request({"Accept-Language": "de"})).lang == "en"
    chosen = locale_for(_request({"Accept-Language": "ar", "Cookie": "lipsyncd_lang=en"}))
    assert chosen.lang == "en" and chosen.dir == "ltr"
    arabic = locale_for(_request({"Cookie": "lipsyncd_lang=ar"}))
    assert arabic.dir == "rtl" and arabic.gettext("API keys") == "مفاتيح API"
    assert arabic.gettext("an untranslated sentence") == "an untranslated sentence"


def test_csrf_tokens_are_bound_to_the_key_and_the_session() -> None:
    token = csrf_token_for(b"key", "session-a")
    assert token == csrf_token_for(b"key", "session-a")
    assert token != csrf_token_for(b"key", "session-b")
    assert token != csrf_token_for(b"other key", "session-a")


def test_spending_is_bucketed_per_day_with_empty_days_and_old_rows_left_out() -> None:
    today = dt.date(2026, 12, 5)
    captures = [
        (dt.datetime(2026, 12, 5, 9), "api", 5),
        (dt.datetime(2026, 12, 5, 23, 59), "app", 7),
        (dt.datetime(2026, 12, 3, 1), "api", 10),
        (dt.datetime(2026, 11, 1), "api", 99),  # before the window
    ]
    days = spend_per_day(captures, today, 30)
    assert len(days) == 30 and days[0].day == dt.date(2026, 11, 6) and days[-1].day == today
    assert (days[-1].api, days[-1].app) == (5, 7) and days[-3].total == 10
    assert sum(day.total for day in days) == 22


def test_the_chart_draws_one_bar_segment_per_spending_and_escapes_its_labels() -> None:
    days = spend_per_day([(dt.datetime(2026, 12, 5), "api", 4), (dt.datetime(2026, 12, 4), "app", 2)],
                         dt.date(2026, 12, 5), 30)
    svg = spend_chart_svg(days, "spent <per> day", {"api": "API", "app": "App & co"})
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<title>2026-12-0") == 2
    assert "spent &lt;per&gt; day" in svg and "App &amp; co" in svg and "<per>" not in svg


def test_the_quickstarts_python_verifier_accepts_our_signature_and_rejects_a_forgery() -> None:
    import html
    import re
    import time
    from pathlib import Path

    from postprocess.signing import new_webhook_secret, webhook_headers

    template = (Path(__file__).parents[2] / "gateway/web/templates/quickstart.html").read_text()
    snippet = html.unescape(re.search(r"<pre><code># Python\n(.*?)</code></pre>", template, re.S).group(1))
    namespace: dict[str, object] = {}
    exec(snippet, namespace)  # noqa: S102 - the page's own example, run as a reader would
    verify = namespace["verify"]
    secret, body = new_webhook_secret(), b'{"id": "job"}'
    headers = webhook_headers(secret, "msg_1", int(time.time()), body)
    assert verify(secret, headers, body) is True
    assert verify(secret, headers, body + b" ") is False
    assert verify(new_webhook_secret(), headers, body) is False


def test_the_quickstarts_node_verifier_accepts_our_signature_and_rejects_a_forgery() -> None:
    import html
    import json
    import re
    import shutil
    import subprocess
    import time
    from pathlib import Path

    import pytest

    from postprocess.signing import new_webhook_secret, webhook_headers

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    template = (Path(__file__).parents[2] / "gateway/web/templates/quickstart.html").read_text()
    snippet = html.unescape(re.search(r"<pre><code>// Node.js\n(.*?)</code></pre>", template, re.S).group(1))
    secret, body = new_webhook_secret(), '{"id": "job"}'
    headers = webhook_headers(secret, "msg_1", int(time.time()), body.encode())
    cases = [[secret, body], [secret, body + " "], [new_webhook_secret(), body]]
    script = snippet + (
        f"\nconst headers = {json.dumps(headers)};\n"
        f"console.log(JSON.stringify({json.dumps(cases)}.map(([s, b]) => verify(s, headers, b))));\n"
    )
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, False, False]
