"""``mcp:`` tools against a real MCP server over stdio, written here, and the shipped example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aoe.cli.main import main
from aoe.errors import ToolError
from aoe.spec.models import ToolSpec
from aoe.tools import Toolbox
from tests.tools.specs import call, tool_spec

REPO = Path(__file__).resolve().parents[2]
SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("vendors")

@server.tool()
def vendor_status(vendor_id: str) -> dict:
    """Status of a vendor in the vendor master."""
    if vendor_id != "V-10042":
        raise ValueError(f"unknown vendor {vendor_id}")
    return {"vendor_id": vendor_id, "status": "active"}

@server.tool(name="open.items")
def open_items() -> str:
    """How many invoices of the vendor are open."""
    return "3 open items"

if __name__ == "__main__":
    server.run()
'''


def _spec(tmp_path: Path, argv: list[str] | None = None, timeout_s: float = 20.0) -> ToolSpec:
    (tmp_path / "vendor_server.py").write_text(SERVER)
    return tool_spec(tmp_path, "erp", "mcp", {"command": argv or ["python", "vendor_server.py"]},
                     timeout_s=timeout_s)


async def test_the_servers_tools_are_offered_called_and_closed(tmp_path: Path) -> None:
    """Each server tool is offered as erp__<name> with its own schema, and answers calls."""
    box = await Toolbox.open([_spec(tmp_path)])
    try:
        definitions = {d.name: d for d in box.definitions()}
        assert set(definitions) == {"erp__vendor_status", "erp__open_items"}
        schema = definitions["erp__vendor_status"].parameters
        assert schema["required"] == ["vendor_id"]
        assert "Status of a vendor" in definitions["erp__vendor_status"].description
        ok, unknown, bad, renamed = await box.run_all([
            call("erp__vendor_status", {"vendor_id": "V-10042"}, "1"),
            call("erp__vendor_status", {"vendor_id": "V-1"}, "2"),
            call("erp__vendor_status", {"vendor_id": 7}, "3"),
            call("erp__open_items", {}, "4"),
        ])
    finally:
        await box.aclose()
    assert not ok.is_error
    assert json.loads(ok.content) == {"vendor_id": "V-10042", "status": "active"}
    assert unknown.is_error
    assert bad.is_error
    assert "invalid arguments for erp__vendor_status" in bad.content
    assert (renamed.content, renamed.is_error) == ("3 open items", False)


async def test_a_server_that_cannot_start_is_a_clear_tool_error(tmp_path: Path) -> None:
    """A missing program or a server that exits at once names the tool and how to look."""
    with pytest.raises(ToolError, match="MCP server of tool 'erp' did not start") as caught:
        await Toolbox.open([_spec(tmp_path, ["no-such-mcp-server-aoe"])])
    assert "not found" in caught.value.message
    (tmp_path / "crash.py").write_text("raise SystemExit(3)\n")
    with pytest.raises(ToolError, match="did not start"):
        await Toolbox.open([_spec(tmp_path, ["python", "crash.py"], timeout_s=10)])


def test_the_mcp_example_workflow_runs_simulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """workflows/mcp-inventory.yaml starts its server, calls its tools and completes."""
    events = tmp_path / "ev.jsonl"
    code = main(["run", str(REPO / "workflows" / "mcp-inventory.yaml"), "--simulate",
                 "--json", "--no-live", "--events", str(events)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["workflows"][0]["agents"]["replenish"]["state"] == "COMPLETED"
    called = [json.loads(line) for line in events.read_text().splitlines()]
    tools = [(e["tool"], e["ok"]) for e in called if e["kind"] == "tool_called"]
    assert tools == [("inventory__below_reorder_point", True),
                     ("inventory__stock_level", True), ("inventory__stock_level", True)]
