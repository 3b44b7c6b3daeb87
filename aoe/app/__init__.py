"""The front door: what the CLI and library users call.

``validate`` checks files, ``plan`` describes them, ``prepare`` checks everything a run
needs (bad input fails there, before a cent is spent) and ``run.RunHandle`` executes it,
or resumes a run from the ledger.
"""
