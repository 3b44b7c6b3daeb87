"""A small inventory MCP server over stdio, for workflows/mcp-inventory.yaml.

Run by aoe as ``python mcp/inventory_server.py`` (from the workflow's directory); it
serves stock levels and open reservations from an in-memory extract of a warehouse.
Needs the MCP SDK: ``pip install 'aoe[mcp]'``.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

STOCK = {
    "MRO-8840": {"description": "Hex bolt M8x40 box/100", "on_hand": 64, "unit": "BOX",
                 "warehouse": "DET-01", "reorder_point": 40},
    "PPE-0212": {"description": "Safety gloves L", "on_hand": 18, "unit": "PR",
                 "warehouse": "DET-01", "reorder_point": 50},
    "LUB-0505": {"description": "Cutting fluid 5 l", "on_hand": 9, "unit": "CAN",
                 "warehouse": "DET-01", "reorder_point": 6},
}
RESERVED = {"MRO-8840": 12, "PPE-0212": 10}

server = MCPServer("inventory")


@server.tool()
def stock_level(sku: str) -> dict[str, Any]:
    """Units on hand, reserved and available for one item (SKU), and its reorder point."""
    item = STOCK.get(sku.strip().upper())
    if item is None:
        raise ValueError(f"unknown SKU {sku}")
    reserved = RESERVED.get(sku, 0)
    return {"sku": sku, **item, "reserved": reserved, "available": item["on_hand"] - reserved}


@server.tool()
def below_reorder_point() -> list[str]:
    """SKUs whose available quantity is at or below their reorder point."""
    return sorted(
        sku for sku, item in STOCK.items()
        if item["on_hand"] - RESERVED.get(sku, 0) <= item["reorder_point"]
    )


if __name__ == "__main__":
    server.run()
