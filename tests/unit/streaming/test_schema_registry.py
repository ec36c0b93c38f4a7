"""RegistrySchemas against a stand-in for the Confluent Schema Registry REST API.

A real Confluent registry cannot be installed here (it is not on Maven Central or Debian), so this is a
minimal in-process HTTP stand-in for the two endpoints TickLake uses; it checks our client wiring, not
the registry. Schema ids must come from the registry, and an unknown id must read as "not registered".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from schemas.avro import TRADE_V1, TRADE_V2
from schemas.wire import RegistrySchemas, schema_id_of


class _Registry(BaseHTTPRequestHandler):
    schemas: dict[int, str] = {}
    subjects: dict[str, list[int]] = {}

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # POST /subjects/<subject>/versions
        subject = self.path.split("/")[2]
        schema = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["schema"]
        sid = next((known for known, text in self.schemas.items() if json.loads(text) == json.loads(schema)), None)
        if sid is None:  # a new schema gets the next id; a known one keeps its id
            sid = 100 + len(self.schemas)
            self.schemas[sid] = schema
        self.subjects.setdefault(subject, []).append(sid)
        self._reply(200, {"id": sid})

    def do_GET(self) -> None:  # GET /schemas/ids/<id>
        sid = int(self.path.split("/")[3].split("?")[0])
        if sid not in self.schemas:
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})
        else:
            self._reply(200, {"schema": self.schemas[sid]})


@pytest.fixture
def registry_url() -> Iterator[str]:
    _Registry.schemas, _Registry.subjects = {}, {}
    server = HTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_ids_come_from_the_registry_and_resolve_back(registry_url: str) -> None:
    lookup = RegistrySchemas(registry_url)
    v1, v2 = lookup.id_for(TRADE_V1), lookup.id_for(TRADE_V2)
    assert v1 != v2 and v1 >= 100  # the registry's ids, not the local ones (1 and 4)
    assert lookup.id_for(TRADE_V1) == v1
    assert lookup.schema_json(v2)["fields"][-1]["name"] == "venue_order_id"
    assert lookup.schema_json(9999) is None
    assert _Registry.subjects["raw.trades-value"][:2] == [v1, v2]  # registered under the topic subject


def test_framed_payload_carries_the_registry_id(registry_url: str) -> None:
    from schemas.wire import encode

    lookup = RegistrySchemas(registry_url)
    sid = lookup.id_for(TRADE_V1)
    record = {"trade_id": "t", "symbol": "A", "price": 1.0, "quantity": 1.0, "side": "BUY", "trader_id": "x",
              "account_id": "y", "exchange": "NYSE", "trade_timestamp": 0, "event_timestamp": 0}
    assert schema_id_of(encode(sid, TRADE_V1.parsed, record)) == sid
