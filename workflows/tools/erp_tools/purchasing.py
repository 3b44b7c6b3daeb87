"""Purchase order and goods receipt lookups, for the three-way match."""

from __future__ import annotations

from typing import Any

from ._data import rows


def purchase_order(po_number: str) -> dict[str, Any]:
    """The open purchase order ``po_number`` with its lines, or ``found: false``."""
    lines = [r for r in rows("purchase_orders") if r["po_number"] == po_number.strip().upper()]
    if not lines:
        return {"found": False, "po_number": po_number}
    first = lines[0]
    return {
        "found": True,
        "po_number": first["po_number"],
        "vendor_id": first["vendor_id"],
        "order_date": first["order_date"],
        "currency": first["currency"],
        "status": first["status"],
        "lines": [
            {
                "line": int(r["po_line"]),
                "item_id": r["item_id"],
                "description": r["description"],
                "quantity": float(r["quantity"]),
                "unit": r["unit"],
                "unit_price": float(r["unit_price"]),
            }
            for r in lines
        ],
    }


def goods_receipts(po_number: str) -> dict[str, Any]:
    """What the warehouse booked as received against ``po_number``, per PO line."""
    booked = [r for r in rows("goods_receipts") if r["po_number"] == po_number.strip().upper()]
    received: dict[int, float] = {}
    for r in booked:
        line = int(r["po_line"])
        received[line] = received.get(line, 0.0) + float(r["quantity_received"])
    return {
        "po_number": po_number,
        "receipts": sorted({r["gr_number"] for r in booked}),
        "lines": [{"line": k, "quantity_received": v} for k, v in sorted(received.items())],
    }
