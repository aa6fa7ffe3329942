"""The GitHub Actions workflows: actionlint, yamllint, and the delivery rules they must keep."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent  # the venv: actionlint, yamllint and shellcheck live here
YAMLLINT = (
    "{extends: default, rules: {line-length: {max: 140}, document-start: disable, "
    "comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}"
)
# owner/repo@vX.Y.Z, or a full commit SHA; never a branch or a moving major tag
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the bare key `on` as True
    if True in data:
        data["on"] = data.pop(True)  # type: ignore[call-overload]
    return data


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_id, s) for job_id, job in workflow["jobs"].items() for s in job.get("steps", [])]


def test_the_four_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == [
        "deploy-dev.yml",
        "deploy-prod.yml",
        "drift.yml",
        "preview.yml",
    ]


def test_actionlint() -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [str(BIN / "actionlint"), "-no-color", *map(str, WORKFLOWS)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint() -> None:
    result = subprocess.run(
        [str(BIN / "yamllint"), "--strict", "-d", YAMLLINT, *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_permissions(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("permissions") in ({}, {"contents": "read"}), "top-level permissions"
    for job_id, job in workflow["jobs"].items():
        assert "permissions" in job, f"{job_id} must say which permissions it needs"
        assert "write-all" not in str(job["permissions"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned(path: Path) -> None:
    for job_id, step in steps(load(path)):
        if "uses" in step:
            assert PINNED.match(step["uses"]), f"{job_id}: {step['uses']} is not pinned"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_secret_or_untrusted_expression_inside_a_script(path: Path) -> None:
    for job_id, step in steps(load(path)):
        script = step.get("run", "") + step.get("with", {}).get("script", "")
        for expression in re.findall(r"\$\{\{(.*?)\}\}", script):
            pytest.fail(f"{job_id}: ${{{{{expression}}}}} in a script; pass it through env")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_passphrase_goes_to_a_temp_file_removed_always(path: Path) -> None:
    workflow = load(path)
    for job_id, job in workflow["jobs"].items():
        scripts = [s.get("run", "") for s in job.get("steps", [])]
        writes = [i for i, s in enumerate(scripts) if "PULUMI_CONFIG_PASSPHRASE_FILE=" in s]
        if not writes:
            continue
        assert "mktemp" in scripts[writes[0]] and "chmod 600" in scripts[writes[0]]
        removal = [
            s
            for s in job["steps"]
            if "rm -" in s.get("run", "") and "PULUMI_CONFIG_PASSPHRASE_FILE" in s["run"]
        ]
        assert removal and removal[0].get("if") == "always()", job_id
    assert "PULUMI_CONFIG_PASSPHRASE:" not in path.read_text().replace("secrets.PULUMI_CONFIG", "")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_optional_discord_notification(path: Path) -> None:
    text = path.read_text()
    assert "secrets.DISCORD_WEBHOOK_URL" in text
    assert '[ -z "$DISCORD_WEBHOOK_URL" ]' in text  # skipped, not failed, when unset


@pytest.mark.parametrize("name", ["deploy-dev.yml", "deploy-prod.yml"])
def test_deploys_queue_and_are_never_cancelled(name: str) -> None:
    workflow = load(REPO / ".github" / "workflows" / name)
    stack = name.removeprefix("deploy-").removesuffix(".yml")
    assert workflow["concurrency"] == {"group": f"pulumi-{stack}", "cancel-in-progress": False}


@pytest.mark.parametrize("name", ["deploy-dev.yml", "deploy-prod.yml"])
def test_deploys_guard_the_preview_and_apply_the_plan_and_fail_on_rollback(name: str) -> None:
    text = (REPO / ".github" / "workflows" / name).read_text()
    guard = text.index("python -m tools.preview_guard")
    up = text.index("pulumi up --stack")
    assert text.index("--save-plan") < guard < up
    assert "--plan " in text[up:]
    # the Release's own messages (tests/unit/test_engine.py checks the engine writes them)
    assert 'grep -q "Rolled back: release"' in text and "set -o pipefail" in text
    assert 'grep -q "The rollback to .* failed too"' in text
    assert text.count("--policy-pack policy") >= 2


def test_prod_apply_waits_for_approval_and_applies_the_saved_plan() -> None:
    workflow = load(REPO / ".github" / "workflows" / "deploy-prod.yml")
    plan, apply = workflow["jobs"]["plan"], workflow["jobs"]["apply"]
    assert apply["environment"] == "production" and apply["needs"] == ["plan"]
    assert "environment" not in plan
    uploads = [s for s in plan["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    downloads = [s for s in apply["steps"] if "download-artifact" in s.get("uses", "")]
    assert uploads[0]["with"]["name"] == downloads[0]["with"]["name"] == "prod-plan"
    up = [s["run"] for s in apply["steps"] if "pulumi up" in s.get("run", "")]
    assert up == [
        "set -o pipefail\n"
        "pulumi up --stack prod --policy-pack policy --plan plan/plan.json --yes \\\n"
        '  2>&1 | tee "$RUNNER_TEMP/up.log"\n'
    ]
    assert not any("pulumi preview" in s.get("run", "") for s in apply["steps"])


def test_prod_version_is_validated_before_use() -> None:
    workflow = load(REPO / ".github" / "workflows" / "deploy-prod.yml")
    assert workflow["on"]["workflow_dispatch"]["inputs"]["version"]["required"] is True
    assert workflow["on"]["release"] == {"types": ["published"]}
    first = workflow["jobs"]["plan"]["steps"][0]
    assert first["id"] == "version"
    assert r"^[0-9]+\.[0-9]+\.[0-9]+$" in first["run"]
    script = f"set -e\n{first['run']}"
    for requested, ok in [
        ("1.4.2", True),
        ("v1.4.2", True),
        ("1.4", False),
        ("1.4.2; rm -rf /", False),
    ]:
        result = subprocess.run(
            ["bash", "-c", script],
            env={"REQUESTED": requested, "GITHUB_OUTPUT": os.devnull, "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            check=False,
        )
        assert (result.returncode == 0) is ok, (requested, result.stdout)


def test_fork_prs_never_reach_secret_jobs() -> None:
    workflow = load(REPO / ".github" / "workflows" / "preview.yml")
    assert set(workflow["on"]) == {"pull_request"}  # never pull_request_target
    same_repo = "github.event.pull_request.head.repo.full_name == github.repository"
    preview = workflow["jobs"]["preview"]
    assert preview["if"] == same_repo
    assert "secrets." not in yaml.safe_dump(workflow["jobs"]["synth"])
    (pulumi,) = [s for s in preview["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi["with"]["comment-on-pr"] is True and pulumi["with"]["edit-pr-comment"] is True
    assert pulumi["with"]["policyPacks"] == "policy"
    assert sorted(preview["strategy"]["matrix"]["stack"]) == ["dev", "prod"]


def test_drift_checks_each_stack_and_manages_one_issue() -> None:
    workflow = load(REPO / ".github" / "workflows" / "drift.yml")
    assert "schedule" in workflow["on"] and "workflow_dispatch" in workflow["on"]
    job = workflow["jobs"]["drift"]
    assert job["permissions"] == {"actions": "read", "contents": "read", "issues": "write"}
    # never in a deploy group: a pending drift run there would cancel a pending deploy
    assert job["concurrency"]["group"] == "drift-${{ matrix.stack }}"
    ids = [s.get("id") for s in job["steps"]]
    busy, check = job["steps"][ids.index("busy")], job["steps"][ids.index("check")]
    # a deploy of the stack queued or running skips the check (through the API: no gh on the runner)
    assert ids.index("busy") < ids.index("check")
    assert "workflow_id: `deploy-${STACK}.yml`" in busy["with"]["script"]
    assert check["if"] == "steps.busy.outputs.deploying == 'false'"
    assert "gh " not in yaml.safe_dump(job)
    # the issue is only touched with a real answer (a skipped check must not close it)
    (issue,) = [s for s in job["steps"] if "issues.create(" in s.get("with", {}).get("script", "")]
    answered = "steps.check.outputs.drift == 'true' || steps.check.outputs.drift == 'false'"
    assert issue["if"] == answered
    assert sorted(job["strategy"]["matrix"]["stack"]) == ["dev", "prod"]
    text = yaml.safe_dump(job)
    assert "--refresh --expect-no-changes" in text
    for call in ("issues.create(", "issues.createComment(", "state: 'closed'", "labels: 'drift'"):
        assert call in text
