"""Example ERP lookups for aoe's tool workflows, over the CSV extracts in ``workflows/data``.

A workflow names them as ``python: erp_tools.vendors:lookup`` and so on; aoe puts the
workflow's directory on ``sys.path``, so this package is found beside the workflow file.
"""
