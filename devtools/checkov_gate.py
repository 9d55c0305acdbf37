"""``make lint``'s verdict on checkov's JSON report (stdin): no failed check, every ``.bicep`` parsed.

checkov exits 0 when it cannot parse a file (it then checks nothing in it), so the gate also
fails on any parsing error, and names the files by parsing each with checkov's own Bicep parser
(run it with the checkov environment's Python). Skipped checks live in one place,
``infra/.checkov.yaml``, each with its reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

INFRA = Path(__file__).resolve().parent.parent / "infra"


def verdict(report: dict, bicep_files: list[Path]) -> list[str]:
    """What is wrong with a checkov report (empty: nothing)."""
    summary = report.get("summary", {})
    problems = [f"{c['check_id']} {c['check_name']} ({c['file_path']}: {c['resource']})"
                for c in report.get("results", {}).get("failed_checks", [])]
    if summary.get("parsing_errors"):
        problems.append(f"checkov could not parse {summary['parsing_errors']} file(s): run it with LOG_LEVEL=DEBUG to see which")
    problems += [f"checkov cannot parse {p.relative_to(INFRA.parent)}" for p in unparsable(bicep_files)]
    return problems


def unparsable(bicep_files: list[Path]) -> list[Path]:
    """The files checkov's Bicep parser (pycep) cannot read; none when run outside its environment."""
    try:
        from checkov.bicep.parser import Parser
    except ImportError:
        return []
    parser = Parser()
    return [p for p in bicep_files if parser.parse(p)[0] is None]


def main() -> int:
    report = json.load(sys.stdin)
    if isinstance(report, list):  # one entry per framework; we run bicep only
        (report,) = report
    problems = verdict(report, sorted(INFRA.rglob("*.bicep")))
    summary = report.get("summary", {})
    print(f"checkov {summary.get('checkov_version')}: {summary.get('passed')} passed, {summary.get('failed')} failed, "
          f"{summary.get('parsing_errors')} parsing errors, {summary.get('resource_count')} resources")
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
