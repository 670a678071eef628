"""Notifications at a real agent through real Apprise: a member's job done, waiting for a person (M0) and
failed (thermal runaway) reach a real SMTP server (aiosmtpd) and an Apprise JSON webhook on loopback, in the
member's language; managers hear of the alarm; a dead target neither delays nor fails the job."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from afn_agent.config_model import NotifyTable
from afn_agent.intake import submit
from afn_agent.machine.console import ConsoleAction, Do
from afn_agent.machine.events import MachineState
from afn_agent.notify import Notifier, _safe
from tests.helpers import wait_for
from tests.integration.test_access import SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """A real SMTP server on loopback; each message parsed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[email.message.EmailMessage] = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                box.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def bodies(self) -> list[tuple[str, str]]:
        return [(str(m["Subject"]), m.get_body(("plain",)).get_content()) for m in self.messages]


class Hook:
    """What Apprise's json:// posts: {"version", "title", "message", "type"}, per path."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict]:
        return [body for p, body in self.posts if p == path]


@pytest.fixture
def lab(one_machine):
    box, hook = Mailbox(), Hook()
    box.controller.start()
    dead = f"json://127.0.0.1:{free_port()}/nobody-listens"
    section = f"""
[access]
badge_secret = "{SECRET}"

[notify]
managers = ["json://127.0.0.1:{hook.port}/managers"]
member_schemes = ["mailto", "json"]
manager_language = "en"
retries = 1
retry_s = 0.2
"""
    members = [
        {"id": "ana", "name": "Ana", "language": "fr", "badges": ["0A00AAAA01"], "trainings": [{"class": "fdm-printer"}],
         "notify": [f"mailto://127.0.0.1:{box.port}?from=agent@lab.example&to=ana@example.org&mode=insecure", dead,
                    f"form://127.0.0.1:{hook.port}/ana-internal"]},  # a kind members may not use here
        {"id": "bob", "name": "Bob", "language": "en", "badges": ["0A00BBBB01"], "trainings": [{"class": "fdm-printer"}],
         "notify": [f"json://127.0.0.1:{hook.port}/bob"]},
        {"id": "cid", "name": "Cid", "trainings": [{"class": "fdm-printer"}]},  # did not opt in
    ]  # fmt: skip

    def make(**sim_options):
        agent, _sim = one_machine("printer-1", safety=section, extra_machine={"reader": "sim"}, **sim_options)
        agent.access.directory.apply_snapshot({"version": 1, "members": members}, "test")
        return agent

    yield make, box, hook
    box.controller.stop()
    hook.server.shutdown()


def test_done_and_waiting_reach_the_member_in_french_and_a_dead_target_does_not_delay(lab, tmp_path):
    make, box, hook = lab
    agent = make()
    job = tmp_path / "brim.gcode"
    job.write_text("G28\nG1 X10 Y10 F3000\nM0 Retirez la bordure\nG1 X20\n")
    started = time.monotonic()
    assert agent.access.badge_uid("printer-1", "0A00AAAA01").code == "allowed"  # her session: her job runs
    submit(
        agent.config,
        agent.ledger,
        "printer-1",
        job,
        "test",
        name="support.gcode",
        held=False,
        member_id="ana",
    )
    m = agent.machines["printer-1"]
    wait_for(lambda: m.state == MachineState.WAITING, 20, "the M0 prompt")
    wait_for(lambda: len(box.messages) >= 1, 10, "the waiting-for-a-person mail")
    m.console(ConsoleAction(Do.CONTINUE, "test")).result(5)
    assert agent.wait_idle("printer-1", 30)
    job_s = time.monotonic() - started
    wait_for(lambda: len(box.messages) >= 2, 10, "the job-done mail")
    (waiting_subject, waiting), (done_subject, done) = box.bodies()
    assert waiting_subject == "printer-1 vous attend"
    assert "support.gcode sur printer-1 attend une personne : Retirez la bordure" in waiting
    assert done_subject == "printer-1 : votre travail est terminé"
    assert "support.gcode est terminé sur printer-1" in done and "€" in done
    assert box.messages[0]["To"] == "ana@example.org"
    wait_for(lambda: agent.notifier.failed >= 2, 10, "the dead target given up after its retry")
    assert job_s < 25, f"the job took {job_s:.1f} s"
    assert agent.notifier.sent == 2 and agent.notifier.dropped == 0
    assert agent.notifier.refused == 2 and not hook.at("/ana-internal"), "form:// is not in member_schemes"
    assert not hook.at("/managers"), "a job that went well troubles no manager"


def test_failed_job_to_the_member_in_english_and_the_alarm_to_managers(lab, tmp_path):
    make, box, hook = lab
    agent = make(thermal_runaway_at=300)
    from afn_agent.sim.jobs import circle_gcode

    path = circle_gcode(tmp_path / "ring.gcode", 1500, heat=None, centre=(110, 110))
    assert agent.access.badge_uid("printer-1", "0A00BBBB01").code == "allowed"
    submit(
        agent.config, agent.ledger, "printer-1", path, "test", name="ring.gcode", held=False, member_id="bob"
    )
    assert agent.wait_idle("printer-1", 30)
    wait_for(lambda: hook.at("/bob") and hook.at("/managers"), 10, "the failure and the alarm")
    (bob,) = hook.at("/bob")
    assert bob["title"] == "printer-1: your job stopped"
    assert (
        bob["message"].startswith("ring.gcode stopped at printer-1:") and "runaway" in bob["message"].lower()
    )
    alarm = hook.at("/managers")[0]
    assert alarm["title"] == "printer-1: alarm" and "runaway" in alarm["message"].lower()
    assert not box.messages, "ana had no job"


def test_rate_limit_retries_and_no_credentials_in_logs():
    sent: list[tuple[str, str]] = []
    answers = iter([False, True] + [True] * 50)

    def send(target, title, body):
        sent.append((target, title))
        return next(answers)

    settings = NotifyTable(managers=["json://u:secret@hook.example/x"], manager_language="en", per_target_per_hour=3, retry_s=0.05,
                           retries=2, backlog_records=5, backlog_check_s=0.05)  # fmt: skip
    backlog = [0]
    n = Notifier(settings, lambda member: ([], None), lambda: backlog[0], "pi-1", send=send).start()
    try:
        for _ in range(5):
            n.offer("mill-1", "alarm", {"code": 9, "meaning": "Homing fail"})
        wait_for(lambda: n.sent == 3, 5, "three alarms (one after a retry)")
        assert n.dropped == 2 and len(sent) == 4
    finally:
        n.stop()
    sent.clear()
    n = Notifier(settings, lambda member: ([], None), lambda: backlog[0], "pi-1", send=send).start()
    try:
        backlog[0] = 6
        wait_for(lambda: any("Usage records" in t for _, t in sent), 5, "the backlog notice")
        time.sleep(0.3)  # real time: the backlog is looked at again, and said once only
        assert sum("Usage records" in t for _, t in sent) == 1
    finally:
        n.stop()
    assert _safe("json://u:secret@hook.example/x") == "json://hook.example/…"
