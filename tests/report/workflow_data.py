"""A small workflow for report tests: parallel agents, a retry, a failure and a skip."""

from __future__ import annotations

from pathlib import Path

WORKFLOW = """\
version: 1
name: ap-close
allow_partial_completion: true
max_failure_rate: 0.9
defaults:
  model: openai/gpt-4o-mini
  max_tokens: 100
  retry: {max_retries: 1, strategy: constant, base_delay_s: 0.05, jitter: false}
agents:
  extract:
    module: accounts_payable
    prompt: Extract the invoice fields.
    simulate: {latency_s: 0.05, output_tokens: 40}
  match:
    module: accounts_payable
    needs: [extract]
    prompt: Match the invoice to its purchase order.
    simulate: {latency_s: 0.1, output_tokens: 30, fail_times: 1}
  post:
    module: general_ledger
    model: anthropic/claude-3-5-haiku-latest
    needs: [extract]
    prompt: Post the journal entry.
    simulate: {latency_s: 0.03, output_tokens: 20}
  reconcile:
    module: general_ledger
    needs: [post]
    prompt: Reconcile the ledger.
    simulate: {latency_s: 0.02, output_tokens: 10, fail_times: 5}
  report:
    needs: [match, reconcile]
    prompt: Write the close report.
"""


def write_workflow(directory: Path) -> Path:
    """Write the workflow file into ``directory`` and return its path."""
    path = directory / "ap-close.yaml"
    path.write_text(WORKFLOW, encoding="utf-8")
    return path
