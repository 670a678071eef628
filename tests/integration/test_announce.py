"""Slicers' "Browse": a real zeroconf browser (python-zeroconf, as PrusaSlicer's and Cura's discovery do
over mDNS) on loopback finds each machine of a running agent as `_octoprint._tcp` with the path of its
OctoPrint face; octorest, given that path as its URL, reaches the second machine."""

from __future__ import annotations

import hashlib
import threading
import time

from octorest import OctoRest
from zeroconf import IPVersion, ServiceBrowser, Zeroconf

from afn_agent.agent import Agent
from afn_agent.api.announce import SERVICE
from afn_agent.config import load_config
from tests.helpers import KEYS, api_table, write_config


def test_machines_announced_and_found_with_their_path(tmp_path, start_sim):
    sims = [start_sim("marlin", speed=10) for _ in range(2)]
    machines = [{"id": f"printer-{i + 1}", "class": "fdm-printer", "profile": "marlin2", "port": str(s.link),
                 "baud": s.options["baud"], "tariff": "printer"} for i, s in enumerate(sims)]  # fmt: skip
    path = write_config(tmp_path / "agent.toml", machines)
    p2_key = "printer-2-slicer-key-0123456789"
    path.write_text(path.read_text() + api_table(announce=True) + f"""
[[api.keys]]
name = "printer-2-slicers"
role = "manager"
sha256 = "{hashlib.sha256(p2_key.encode()).hexdigest()}"
machines = ["printer-2"]
""")
    agent = Agent(load_config(path)).start()
    browser = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    found: dict[str, dict] = {}
    lock = threading.Lock()

    class Listener:
        def add_service(self, zc, type_, name):
            info = zc.get_service_info(type_, name, 3000)
            if info is not None and info.port == agent.api.port:  # other tests' agents may announce too
                with lock:
                    found[name] = {k.decode(): v.decode() for k, v in info.properties.items()} | {
                        "address": info.parsed_addresses()[0], "port": info.port}

        def update_service(self, *args):
            pass

        def remove_service(self, *args):
            pass

    try:
        assert agent.announcer is not None and agent.announcer.wait(15), agent.announcer.error
        ServiceBrowser(browser, SERVICE, Listener())
        deadline = time.monotonic() + 10
        while len(found) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(found) == {f"printer-1 (fablab).{SERVICE}", f"printer-2 (fablab).{SERVICE}"}, found
        second = found[f"printer-2 (fablab).{SERVICE}"]
        assert second["path"] == "/octoprint/printer-2/" and second["version"] and second["api"] == "0.1"
        assert second["address"] == "127.0.0.1" and second["port"] == agent.api.port

        # octorest keeps only scheme and host of the announced URL: a key limited to printer-2 takes its
        # un-prefixed calls there; an unlimited key still reaches the default machine
        url = f"http://{second['address']}:{second['port']}{second['path']}"
        assert OctoRest(url=url, apikey=KEYS["manager"]).connection_info()["current"]["port"] == str(sims[0].link)
        client = OctoRest(url=url, apikey=p2_key)
        job = tmp_path / "p2.gcode"
        job.write_text("G28\nG1 X5 Y5 F3000\n")
        client.upload(str(job))
        assert [j["machine_id"] for j in agent.ledger.jobs("printer-2")] == ["printer-2"]
        assert agent.ledger.jobs("printer-1") == []
        assert client.connection_info()["current"]["port"] == str(sims[1].link)
    finally:
        browser.close()
        agent.stop()


def test_a_host_name_in_the_api_table_is_announced_by_its_address():
    """`host = "localhost"` (or the Pi's name) listens on what the name resolves to: that is announced."""
    from afn_agent.api.announce import Announcer

    def at(host: str) -> Announcer:
        return Announcer("fablab", "pi", ["printer-1"], host, 8080, [], "1.10.2")

    assert at("localhost").addresses() == ["127.0.0.1"]
    assert at("127.0.0.2").addresses() == ["127.0.0.2"]
    assert at("0.0.0.0").addresses()  # every interface's (loopback when there is nothing else)
