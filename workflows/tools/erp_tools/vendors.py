"""Vendor master lookup: is a vendor known, active and approved for payment?"""

from __future__ import annotations

import re
from typing import Any

from ._data import rows

_LEGAL_FORMS = re.compile(r"\b(inc|llc|ltd|gmbh|s\.?a|co|corp|corporation|company)\b\.?", re.I)


def normalise(name: str) -> str:
    """A vendor name without case, punctuation or legal form, for matching."""
    name = _LEGAL_FORMS.sub(" ", name.lower())
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", name).split())


def lookup(name: str) -> dict[str, Any]:
    """The vendor master record whose name matches ``name``, or ``found: false``."""
    wanted = normalise(name)
    for row in rows("vendors"):
        if normalise(row["name"]) == wanted:
            return {
                "found": True,
                "vendor_id": row["vendor_id"],
                "name": f"{row['name']} {row['legal_form']}".strip(),
                "country": row["country"],
                "currency": row["currency"],
                "payment_terms": row["payment_terms"],
                "status": row["status"],
                "approved_for_payment": row["approved_for_payment"] == "Y",
                "bank_verified": row["bank_verified"] == "Y",
            }
    return {"found": False, "searched_for": name}
