"""JUnit XML: what CI systems read from ``aoe run --junit``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import xmlschema

from aoe.engine.results import (
    AgentResult,
    AgentState,
    AttemptResult,
    RunResult,
    WorkflowResult,
    WorkflowState,
)
from aoe.providers.base import Usage
from aoe.report.junit import junit_tree, write_junit

XSD = Path(__file__).parent.parent / "data" / "junit.xsd"


def _result() -> RunResult:
    ok = AgentResult("extract", AgentState.COMPLETED, (
        AttemptResult(1, AgentState.COMPLETED, 100.0, 101.5, Usage(120, 40), Decimal("0.0021")),
    ), started_at=100.0, ended_at=101.5)
    failed = AgentResult("match", AgentState.FAILED, (
        AttemptResult(1, AgentState.FAILED, 101.5, 102.0, error="HTTP 503: overloaded",
                      error_type="ServerError"),
        AttemptResult(2, AgentState.FAILED, 103.0, 103.5, error="HTTP 503: <still> & down",
                      error_type="ServerError"),
    ), error="HTTP 503: <still> & down", started_at=101.5, ended_at=103.5)
    budget = AgentResult("post", AgentState.BUDGET_EXCEEDED, (
        AttemptResult(1, AgentState.BUDGET_EXCEEDED, 101.5, 101.6, error="run budget $0.01 spent"),
    ), error="run budget $0.01 spent", started_at=101.5, ended_at=101.6)
    skipped = AgentResult("report", AgentState.SKIPPED, error="needs 'match', which ended FAILED")
    wf = WorkflowResult("ap-close", "ap-close", "ap.yaml", WorkflowState.FAILED,
                        {a.agent_id: a for a in (ok, failed, budget, skipped)}, 100.0, 104.0)
    return RunResult("run1", (wf,), 100.0, 104.0)


def test_junit_validates_against_the_ant_jenkins_schema(tmp_path: Path) -> None:
    """The file passes the JUnit XSD that Jenkins and other CI systems read."""
    path = tmp_path / "out" / "results.xml"
    write_junit(_result(), path, {"ap-close": {"extract": ("openai/gpt-4o-mini", "ap")}})
    xmlschema.XMLSchema(XSD).validate(path)


def test_each_agent_is_a_testcase_with_its_outcome() -> None:
    """Failures carry every attempt's error; skipped agents say why; times are seconds."""
    root = junit_tree(_result()).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert {c.get("classname") for c in cases.values()} == {"ap-close"}
    assert cases["extract"].get("time") == "1.500"
    assert list(cases["extract"]) == []
    failure = cases["match"].find("failure")
    assert failure is not None
    assert failure.get("type") == "ServerError"
    assert failure.text == ("attempt 1: FAILED: HTTP 503: overloaded\n"
                            "attempt 2: FAILED: HTTP 503: <still> & down")
    budget = cases["post"].find("failure")
    assert budget is not None
    assert budget.get("type") == "BUDGET_EXCEEDED"
    skipped = cases["report"].find("skipped")
    assert skipped is not None
    assert "needs 'match'" in (skipped.get("message") or "")


def test_properties_carry_tokens_cost_attempts_model_and_module() -> None:
    """Each agent's figures are suite properties named agent.figure."""
    tree = junit_tree(_result(), {"ap-close": {"extract": ("openai/gpt-4o-mini", "ap")}})
    props = {p.get("name"): p.get("value") for p in tree.getroot().iter("property")}
    assert props["extract.tokens"] == "160"
    assert props["extract.cost_usd"] == "0.0021"
    assert props["match.attempts"] == "2"
    assert props["extract.model"] == "openai/gpt-4o-mini"
    assert props["extract.module"] == "ap"
    assert props["cost_usd"] == "0.0021"


def test_written_file_is_utf8_xml_that_parses(tmp_path: Path) -> None:
    """Error text with markup characters is escaped, so the file always parses."""
    path = tmp_path / "r.xml"
    write_junit(_result(), path)
    assert path.read_bytes().startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    assert ET.parse(path).getroot().tag == "testsuites"
