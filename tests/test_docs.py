"""The README says what the code does: its two commands come first, and its configuration
table lists every setting with the default the code uses."""

from __future__ import annotations

import re
from pathlib import Path

from relay.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_demo_and_test_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert [c for c in commands if c] == ["./dev demo", "./dev test"]
    assert README.index("./dev demo") < README.index("## ")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^\./dev test\b", ci, re.M)


def test_every_setting_is_in_the_configuration_table() -> None:
    rows = dict(re.findall(r"^\| `(RELAY_[A-Z_]+)` \| (.*?) \|", README, re.M))
    for name, field in Settings.model_fields.items():
        variable = f"RELAY_{name.upper()}"
        assert variable in rows, f"{variable} missing from the README configuration table"
        default = field.get_default(call_default_factory=True)
        shown = rows[variable]
        if default is None:
            assert shown == "—", variable
        elif isinstance(default, dict):
            assert shown == "`{}`", variable
        else:
            assert shown == f"`{default}`", variable


def test_internals_names_every_module_of_the_core_and_the_stages() -> None:
    """docs/internals.md says where each concept lives: every module of the shared core and of
    the stage packages is named there (a module added without a word fails this)."""
    text = (ROOT / "docs" / "internals.md").read_text()
    stages = ("produce", "dispatch", "reconcile", "results", "run", "api", "dropin")
    modules = [p for p in (ROOT / "relay").glob("*.py") if not p.name.startswith("__")]
    modules += [p for s in stages for p in (ROOT / "relay" / s).glob("*.py")]
    missing = [
        str(p.relative_to(ROOT))
        for p in modules
        if not p.name.startswith("__") and f"`{p.name}`" not in text and f"{p.stem}.py" not in text
    ]
    assert missing == [], missing
