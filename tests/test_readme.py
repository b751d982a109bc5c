"""The README's tables match the code: every setting, every metric, and the figures that
come from the test suite (attack tests, vector cases, fault rows, fuzz counts and bugs).

Those figures are computed from the tests themselves (pytest's collection, the
tables the vector and fault tests parametrize, the fuzz tests' example counts,
docs/fuzzing.md's bug table), so the README cannot drift from the suite.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel
from starlette.testclient import TestClient

from tests import test_vectors_jws as vectors_jws
from tests import test_wycheproof_jwk as wycheproof_jwk
from tests.conftest import REPO, make_config
from tests.faults import test_fault_matrix as fault_matrix
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.testing import DevIssuer

README = (REPO / "README.md").read_text("utf-8")


def _settings() -> set[str]:
    names = set()
    for section, field in AppConfig.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for key in model.model_fields:
            names.add(f"APP_CONFIG_{section.upper()}__{key.upper()}")
    return names


def test_readme_config_table_lists_every_setting_and_no_other() -> None:
    documented = set(re.findall(r"^\| `(APP_CONFIG_\w+)` \|", README, re.MULTILINE))

    assert documented == _settings()


def test_readme_metrics_table_names_every_metric_the_app_exposes(issuer: DevIssuer) -> None:
    with TestClient(create_app(make_config(issuer))) as client:
        exposed = set(re.findall(r"^# TYPE (jwtedge_\w+)", client.get("/metrics").text, re.M))
    documented = set(re.findall(r"`(jwtedge_\w+)`", README))

    assert exposed
    # Counters are exposed as NAME_total; the README names them that way too.
    assert exposed <= documented, exposed - documented


def test_readme_has_no_unfilled_placeholder() -> None:
    assert not re.search(r"\b[A-Z]+_SECTION\b|\bTODO\b|\bTBD\b", README)


# -- the Security and reliability table: figures that come from the test suite ------------------


def _figure_row(name: str) -> str:
    """The text of the README's "Security and reliability" row ``name``."""
    match = re.search(rf"^\| {re.escape(name)} \| (.+?) \| `", README, re.MULTILINE)
    assert match is not None, f"no {name!r} row in the README's table"
    return match.group(1)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _collected(path: str) -> int:
    """How many tests pytest collects from ``path`` (in a subprocess, so nothing leaks)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", path],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return sum(1 for line in result.stdout.splitlines() if line.startswith(f"{path}::"))


def test_readme_attack_count_is_the_number_of_attack_tests() -> None:
    match = re.match(r"([\d,]+) tests: ", _figure_row("attack list"))
    assert match is not None

    assert _number(match.group(1)) == _collected("tests/test_attacks.py")


def test_readme_vector_figures_are_the_vector_tests_tables(vectors: Path) -> None:
    row = _figure_row("published vectors")
    match = re.search(r"Wycheproof JWS \(([\d,]+) cases\) and JWK \(([\d,]+)\)", row)
    assert match is not None
    jws_cases, jwk_cases = (_number(group) for group in match.groups())

    # One test per case, from the lists the vector tests parametrize.
    assert jws_cases == len(vectors_jws._wycheproof_params())
    assert jwk_cases == len(wycheproof_jwk.PARAMS)
    # The invalid JWS cases accepted, and the valid case they are byte-identical to.
    defects = sorted(vectors_jws.VECTOR_DEFECTS)
    assert f"tcId {defects[0]} and {defects[1]}," in row
    document = vectors_jws._wycheproof_document()
    assert document is not None
    cases = [case for group in document["testGroups"] for case in group["tests"]]
    twins = {
        valid["tcId"]
        for valid in cases
        if valid["result"] == "valid"
        and any(valid["jws"] == c["jws"] for c in cases if c["tcId"] in defects)
    }
    assert twins == {357}
    assert "byte-identical to the valid tcId 357" in row
    assert f"{len(vectors_jws.STRICT_REFUSALS)} valid cases refused on purpose" in row
    # The JWK cases where our model differs from the vector, by number and by name.
    differences = sorted(wycheproof_jwk.KNOWN_DIFFERENCES)
    assert f"JWK: {len(differences)} cases where our model differs" in row
    assert differences == [7, 11, 12]
    assert "(tc7, a ROCA-vulnerable RSA key" in row
    assert "tc11/12, 47- and 63-byte HMAC keys" in row


def test_readme_fault_count_is_the_fault_matrix_rows() -> None:
    row = _figure_row("fault matrix")
    match = re.match(r"([\d,]+) faults \((.+?)\) \N{MULTIPLICATION SIGN} bake / remote keys", row)
    assert match is not None

    assert _number(match.group(1)) == len(fault_matrix.ROWS)
    # Each fault is named once; 500/502/503 is three rows.
    named = match.group(2).split(", ")
    assert len(named) + named.count("500/502/503") * 2 == len(fault_matrix.ROWS)


def _fuzz_examples_per_ci_run() -> int:
    """The sum of every ``examples(N)`` the fuzz tests ask for (their ci counts)."""
    total = 0
    for path in sorted((REPO / "tests" / "fuzz").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "examples"
            ):
                [count] = node.args
                assert isinstance(count, ast.Constant)
                total += count.value
    return total


def _fuzz_long_default() -> int:
    """The long profile's examples per test when ``JWTEDGE_FUZZ_EXAMPLES`` is unset."""
    tree = ast.parse((REPO / "tests" / "fuzz" / "__init__.py").read_text("utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "JWTEDGE_FUZZ_EXAMPLES"
            and isinstance(node.args[1], ast.Constant)
        ):
            return int(node.args[1].value)
    raise AssertionError("tests/fuzz/__init__.py reads no JWTEDGE_FUZZ_EXAMPLES default")


def _fuzzing_bug_table() -> list[tuple[str, str]]:
    """(regression test, status) for every row of docs/fuzzing.md's "Bugs found" table."""
    doc = (REPO / "docs" / "fuzzing.md").read_text("utf-8")
    section = doc.split("### Bugs found", 1)[1]
    return re.findall(r"^\| `(test_\w+)` \| .+ \| (\w[^|]*?) \|$", section, re.MULTILINE)


def test_readme_fuzz_figures_are_the_fuzz_suites_counts() -> None:
    row = _figure_row("fuzzing (hypothesis)")
    match = re.search(
        r"([\d,]+) examples per CI run .+; ([\d,]+) per test in the long run; "
        r"([\d,]+) bugs found and fixed, each kept as a regression test",
        row,
    )
    assert match is not None
    per_ci_run, long_per_test, bugs = (_number(group) for group in match.groups())

    assert per_ci_run == _fuzz_examples_per_ci_run()
    assert long_per_test == _fuzz_long_default()
    table = _fuzzing_bug_table()
    assert bugs == len(table)
    assert all(status.startswith("fixed") for _, status in table), table
    sources = "".join(p.read_text("utf-8") for p in (REPO / "tests" / "fuzz").glob("test_*.py"))
    for test, _ in table:
        assert re.search(rf"^(async )?def {test}\(", sources, re.MULTILINE), test
