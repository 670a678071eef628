"""Keys and tokens never start with `-`, and a key that does still reaches the API from the command line.

A CI run failed when a freshly made manager key began with `-` and `afn-agent badge --key <it>` was
refused by argparse ("expected one argument")."""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from afn_agent.api.auth import new_key
from afn_agent.cli import keys_joined, main
from afn_agent.secret_text import new_secret


def test_a_secret_that_would_start_with_a_dash_is_drawn_again(monkeypatch):
    drawn = iter(["-Xb7", "--q", "Ab-_9"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(drawn))
    assert new_secret(24) == "Ab-_9"


def test_no_key_of_thousands_starts_with_a_dash():
    keys = [new_key()[0] for _ in range(3000)]  # a plain token_urlsafe starts with '-' 1 time in 64
    assert not [k for k in keys if k.startswith("-")]
    assert len(set(keys)) == len(keys) and all(len(k) == 43 for k in keys)


def test_a_key_given_apart_and_starting_with_one_dash_is_taken_as_the_value():
    assert keys_joined(["badge", "0A", "--key", "-Xb7", "--machine", "m"]) == ["badge", "0A", "--key=-Xb7",
                                                                              "--machine", "m"]  # fmt: skip
    assert keys_joined(["badge", "--key", "--machine", "m"]) == ["badge", "--key", "--machine", "m"]
    assert keys_joined(["badge", "--machine", "-m"]) == ["badge", "--machine", "-m"]


def test_badge_sends_a_key_starting_with_a_dash_to_the_api(capsys):
    heard: list[tuple[str, str | None, dict]] = []

    class Agent(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            heard.append((self.path, self.headers["X-Api-Key"], body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["badge", "0A00C0FFEE", "--machine", "printer-1", "--url", url, "--key", "-Xb7q"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert heard == [("/v1/machines/printer-1/sim-badge", "-Xb7q", {"uid": "0A00C0FFEE"})]
    assert "printer-1" in capsys.readouterr().out
