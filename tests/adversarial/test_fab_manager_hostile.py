"""A Fab-manager that misbehaves, over real HTTP: an answer too large to read, a server that never stops
paging, a next page on another host, ids that are not numbers. Each pull fails with a sentence naming the
request, reads no more than its limit, and sends nothing anywhere else."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable

import pytest

from afn_agent.access import fab_manager
from afn_agent.access.fab_manager import FabManager, FabManagerError, OpenApi
from afn_agent.config_model import DirectoryTable

Answer = Callable[[str, int], tuple[bytes, dict[str, str]]]  # (path, page) -> (body, headers)


class Hostile:
    """An HTTP server whose every answer comes from `answer`; counts requests and bytes sent."""

    def __init__(self, answer: Answer) -> None:
        self.answer, self.requests, self.sent = answer, 0, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests += 1
                page = int(self.path.partition("page=")[2].partition("&")[0] or 1)
                body, headers = outer.answer(self.path, page)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                    outer.sent += len(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what a large answer should make it do

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile():
    made: list[Hostile] = []

    def make(answer: Answer) -> Hostile:
        made.append(Hostile(answer))
        return made[-1]

    yield make
    for h in made:
        h.close()


def settings(url: str) -> DirectoryTable:
    return DirectoryTable(source="fab-manager", url=url, token="open-api-token-0123", per_page=2, retries=0,
                          trainings={"3d-printer": "fdm-printer"})  # fmt: skip


def users(*ids: object) -> bytes:
    return json.dumps({"users": [{"id": i, "external_id": "0A01", "full_name": "X"} for i in ids]}).encode()


def test_an_answer_over_16_mb_is_refused_without_being_read_whole(hostile):
    big = hostile(lambda path, page: (b'{"users": [' + b" " * (fab_manager.MAX_PAGE_BYTES + 10) + b"]}", {}))
    api = OpenApi(settings(big.url))
    with pytest.raises(FabManagerError, match=r"/open_api/v1/users\?.*larger than 16 MB"):
        list(api.listing("users"))


def test_a_server_that_never_stops_paging_is_stopped(hostile, monkeypatch):
    monkeypatch.setattr(fab_manager, "MAX_PAGES", 50)  # the same loop as 2000, fifty times quicker
    endless = hostile(lambda path, page: (users(2 * page, 2 * page + 1), {}))
    with pytest.raises(FabManagerError, match="users: more than 50 pages"):
        list(OpenApi(settings(endless.url)).listing("users"))
    assert endless.requests == 50


def test_a_next_link_to_another_host_is_not_followed(hostile):
    elsewhere = hostile(lambda path, page: (users(99), {}))
    link = {"Link": f'<{elsewhere.url}/open_api/v1/users?page=2&per_page=2>; rel="next"'}
    home = hostile(lambda path, page: (users(1, 2), link))
    with pytest.raises(FabManagerError, match="the next page points to another host"):
        list(OpenApi(settings(home.url)).listing("users"))
    assert elsewhere.requests == 0, "the token went nowhere else"


@pytest.mark.parametrize("bad", ["7; DROP TABLE members", 1.5, None, True, [1]])
def test_ids_that_are_not_whole_numbers_fail_the_pull_naming_the_field(hostile, bad):
    def answer(path: str, page: int) -> tuple[bytes, dict[str, str]]:
        if "/users" in path:
            return users(bad), {}
        return json.dumps({path.split("/")[-1].partition("?")[0]: []}).encode(), {}

    server = hostile(answer)
    with pytest.raises(FabManagerError, match=r"users\[\]\.id: expected a whole number"):
        FabManager(settings(server.url)).pull(None, full=True)


def test_not_json_and_not_an_object_are_refused(hostile):
    for body, said in ((b"<html>login</html>", "is not JSON"), (b"[1, 2]", "not a JSON object"),
                       (b'{"users": "all"}', "has no 'users' list"), (b'{"users": [3]}', "is not an object")):  # fmt: skip
        server = hostile(lambda path, page, body=body: (body, {}))
        with pytest.raises(FabManagerError, match=said):
            list(OpenApi(settings(server.url)).listing("users"))
