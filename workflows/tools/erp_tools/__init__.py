"""Example ERP lookups for aoe's tool workflows, over the CSV extracts in ``workflows/data``.

A workflow names them as ``python: erp_tools.vendors:lookup`` and so on; aoe finds this
package beside the file that declares the tools and imports it under a private name of
its own, so its modules reach each other by relative imports (``from ._data import rows``).
"""
