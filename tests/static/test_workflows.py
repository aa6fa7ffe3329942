"""The GitHub Actions workflows: actionlint, yamllint, and the delivery rules they must keep."""

from __future__ import annotations

import copy
import json
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
    # a tag that moved between plan and apply: the engine's refusal is named, as a failure
    violated = text.index('grep -q "violates plan"')
    assert up < violated and "exit 1" in text[violated : violated + 400]
    # the preview pins digests: no revision stamp is needed to redeploy a moved nightly
    assert "app.deploy.revision" not in text


def test_the_pr_preview_comments_the_images_each_stack_would_deploy() -> None:
    job = load(REPO / ".github" / "workflows" / "preview.yml")["jobs"]["preview"]
    runs = [s.get("run", "") for s in job["steps"]]
    (render,) = [r for r in runs if "tools.preview_comment" in r]
    assert 'pulumi preview --stack "$STACK" --json' in render
    scripts = [s["with"]["script"] for s in job["steps"] if "github-script" in s.get("uses", "")]
    assert any("images.md" in s and "updateComment" in s for s in scripts)


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


# --- Where the Pulumi jobs run (issue 12): the self-hosted runner, never for a fork, never host ---
#
# Each rule below is a function from a parsed workflow to its list of problems, so the same rule is
# asserted empty on the real workflows and non-empty on deliberately broken copies of them.

SELF_HOSTED = ["self-hosted", "smart-smoker"]
GITHUB_HOSTED = "ubuntu-latest"
SWITCH, SWITCH_VALUE = "SMOKER_RUNNER", "github-hosted"
ON_GITHUB_HOSTED = f"vars.{SWITCH} == '{SWITCH_VALUE}'"
ON_SELF_HOSTED = f"vars.{SWITCH} != '{SWITCH_VALUE}'"
SAME_REPO = "github.event.pull_request.head.repo.full_name == github.repository"
FORK_PROOF_EVENTS = {"push", "workflow_dispatch", "schedule", "release"}  # a fork starts none
APPLIED_BY_CI = {"dev", "prod"}
RUNS_ON_SWITCH = re.compile(
    r"^\$\{\{ fromJSON\(vars\.(\w+) == '([\w-]+)' && '([^']*)' \|\| '([^']*)'\) \}\}$"
)
PULUMI_COMMAND = re.compile(r"(?<![\w./-])pulumi\s+([a-z][\w-]*)([^\n|;&]*)")
STACK_FLAG = re.compile(r"(?:^|\s)(?:--stack|-s)(?:=|\s+)(\"[^\"]*\"|'[^']*'|\S+)")
NO_STACK_NEEDED = {"version", "about", "whoami"}
PULUMI_SECRETS = ("secrets.PULUMI_", "secrets.PROXMOX_", "secrets.TS_OAUTH")
CA_SECRET = "${{ secrets.PROXMOX_CA_PEM }}"
PIN_EXPRESSION = "${{ env.PULUMI_VERSION }}"
SDK_PIN = re.search(r"^pulumi==([\d.]+)$", (REPO / "requirements.txt").read_text(), re.M)


def workflow_named(name: str) -> dict[str, Any]:
    return load(REPO / ".github" / "workflows" / name)


def events(workflow: dict[str, Any]) -> set[str]:
    on = workflow["on"]
    return {on} if isinstance(on, str) else set(on)


def runner(job: dict[str, Any], variable: str | None) -> Any:
    """The runs-on a job gets with vars.SMOKER_RUNNER set to `variable` (None: unset)."""
    runs_on = job.get("runs-on")
    if not (isinstance(runs_on, str) and "${{" in runs_on):
        return runs_on
    match = RUNS_ON_SWITCH.match(runs_on)
    assert match, f"runs-on {runs_on!r} is not the fromJSON switch on vars.{SWITCH}"
    name, value, then, otherwise = match.groups()
    return json.loads(then if name == SWITCH and variable == value else otherwise)


def labels(runs_on: Any) -> list[str]:
    return [runs_on] if isinstance(runs_on, str) else list(runs_on or [])


def self_hosted(job: dict[str, Any]) -> bool:
    return any("self-hosted" in labels(runner(job, v)) for v in (None, SWITCH_VALUE))


def script(step: dict[str, Any]) -> str:
    """A step's shell script: continuation lines joined, whole-line comments dropped."""
    text = step.get("run", "").replace("\\\n", " ")
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def pulumi_commands(step: dict[str, Any]) -> list[tuple[str, str]]:
    """(subcommand, its arguments up to the next pipe or command separator) of each pulumi call."""
    return PULUMI_COMMAND.findall(script(step))


def runs_pulumi(step: dict[str, Any]) -> bool:
    """The step talks to the backend or Proxmox (a `pulumi version` or a CLI install does not)."""
    if step.get("uses", "").startswith("pulumi/actions@"):
        return "command" in step.get("with", {})
    return any(sub not in NO_STACK_NEEDED for sub, _ in pulumi_commands(step))


def touches_pulumi(job: dict[str, Any]) -> bool:
    """Pulumi CLI commands, pulumi/actions, or the secrets only a Pulumi run needs."""
    return (
        any(s.get("uses", "").startswith("pulumi/actions@") for s in job.get("steps", []))
        or any(pulumi_commands(s) for s in job.get("steps", []))
        or any(secret in yaml.safe_dump(job) for secret in PULUMI_SECRETS)
    )


def runner_problems(workflow: dict[str, Any]) -> list[str]:
    """(a) every Pulumi job runs on the self-hosted runner by default, switched by the variable."""
    problems = []
    for job_id, job in workflow["jobs"].items():
        if not touches_pulumi(job):
            continue
        try:
            default, switched = runner(job, None), runner(job, SWITCH_VALUE)
        except AssertionError as error:
            problems.append(f"{job_id}: {error}")
            continue
        if default != SELF_HOSTED:
            problems.append(f"{job_id}: runs on {default!r} by default, not {SELF_HOSTED}")
        if switched != GITHUB_HOSTED:
            problems.append(f"{job_id}: runs on {switched!r} with {SWITCH}={SWITCH_VALUE}")
    return problems


def fork_problems(workflow: dict[str, Any]) -> list[str]:
    """(b) no self-hosted job can be started by a fork's pull request."""
    problems = []
    if "pull_request_target" in events(workflow):
        problems.append("pull_request_target runs a fork's PR with secrets: never use it")
    untrusted = events(workflow) - FORK_PROOF_EVENTS
    for job_id, job in workflow["jobs"].items():
        if not self_hosted(job) or not untrusted:
            continue
        condition = str(job.get("if", "")).removeprefix("${{").removesuffix("}}").strip()
        conjuncts = [c.strip() for c in condition.split("&&")]
        if "||" in condition or SAME_REPO not in conjuncts:
            problems.append(
                f"{job_id}: self-hosted, started by {sorted(untrusted)}, not `if: {SAME_REPO}`"
            )
    return problems


def stack_values(value: str, envs: list[dict[str, Any]], job: dict[str, Any]) -> list[str] | None:
    """What a --stack / stack-name value can be: a literal, an env variable, a matrix value."""
    value = value.strip("\"'")
    variable = re.fullmatch(r"\$\{?(\w+)\}?", value)
    if variable:
        found = [env[variable[1]] for env in envs if variable[1] in env]
        if not found:
            return None
        value = str(found[0])
    matrix = re.fullmatch(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", value)
    if matrix:
        values = job.get("strategy", {}).get("matrix", {}).get(matrix[1])
        return [str(v) for v in values] if isinstance(values, list) else None
    return None if "$" in value else [value]


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [str(node)]


def host_problems(workflow: dict[str, Any]) -> list[str]:
    """(c) CI never touches the host stack: every Pulumi call names dev or prod, nothing else."""
    problems = []
    text = re.sub(r"make synth STACK=\S+", "", yaml.safe_dump(workflow))  # offline, no Pulumi
    if re.search(r"(--stack[= ]+|-s +|stack-name: *|STACK[:=] *)[\"']?host\b", text):
        problems.append("the host stack is named as a Pulumi stack")
    for job_id, job in workflow["jobs"].items():
        if touches_pulumi(job) and "host" in strings(job.get("strategy", {})):
            problems.append(f"{job_id}: its matrix includes host")
        for step in job.get("steps", []):
            envs = [step.get("env", {}), job.get("env", {}), workflow.get("env", {})]
            named: list[tuple[str, str | None]] = []
            for sub, args in pulumi_commands(step):
                if sub not in NO_STACK_NEEDED:
                    flag = STACK_FLAG.search(args)
                    named.append((f"pulumi {sub}{args}", flag[1] if flag else None))
            with_ = step.get("with", {})
            if step.get("uses", "").startswith("pulumi/actions@") and "command" in with_:
                named.append((f"pulumi/actions {with_['command']}", with_.get("stack-name")))
            if re.search(r"\bmake\b[^\n]*\b(up|preview)\b", script(step)):
                problems.append(
                    f"{job_id}: `make up/preview` (use pulumi with --stack and the policy pack)"
                )
            for call, value in named:
                values = None if value is None else stack_values(value, envs, job)
                if values is None:
                    problems.append(f"{job_id}: `{call.strip()}` names no stack CI can tell")
                elif not set(values) <= APPLIED_BY_CI:
                    problems.append(f"{job_id}: `{call.strip()}` runs on {values}")
    return problems


def first_pulumi_run(job: dict[str, Any]) -> int:
    return next(i for i, s in enumerate(job["steps"]) if runs_pulumi(s))


def github_hosted_problems(workflow: dict[str, Any]) -> list[str]:
    """(d) only with the variable: join the tailnet, trust the CA from a secret, install the CLI;
    without it, the runner's CLI is checked against the pin. All before the first Pulumi run."""
    problems = []
    for job_id, job in workflow["jobs"].items():
        if not touches_pulumi(job):
            continue
        jobsteps = job.get("steps", [])
        first = first_pulumi_run(job) if any(runs_pulumi(s) for s in jobsteps) else len(jobsteps)
        tailnet = [i for i, s in enumerate(jobsteps) if s.get("uses", "").startswith("tailscale/")]
        ca = [i for i, s in enumerate(jobsteps) if "PROXMOX_CA_PEM" in s.get("env", {})]
        install = [
            i
            for i, s in enumerate(jobsteps)
            if s.get("uses", "").startswith("pulumi/actions@")
            and "command" not in s.get("with", {})
        ]
        check = [i for i, s in enumerate(jobsteps) if '!= "v$PULUMI_VERSION"' in s.get("run", "")]
        if len(tailnet) != 1 or len(ca) != 1:
            problems.append(
                f"{job_id}: needs one tailnet join and one CA step, has {tailnet}, {ca}"
            )
        for i in tailnet + ca + install:
            if jobsteps[i].get("if") != ON_GITHUB_HOSTED:
                problems.append(f"{job_id}: step {i} must be `if: {ON_GITHUB_HOSTED}`")
        if not check or any(jobsteps[i].get("if") != ON_SELF_HOSTED for i in check):
            problems.append(
                f"{job_id}: no `if: {ON_SELF_HOSTED}` check of the runner's CLI version"
            )
        if any(i > first for i in tailnet + ca + install + check):
            problems.append(f"{job_id}: the runner is prepared after the first Pulumi run")
        for i in ca:
            step = jobsteps[i]
            run = step.get("run", "")
            if step["env"]["PROXMOX_CA_PEM"] != CA_SECRET:
                problems.append(f"{job_id}: the CA must come from {CA_SECRET}")
            if not all(
                part in run
                for part in (
                    "mktemp",
                    "/usr/local/share/ca-certificates/",
                    "update-ca-certificates",
                )
            ):
                problems.append(f"{job_id}: the CA goes through a temp file into the system store")
            for line in run.splitlines():
                allowed = (
                    r'if \[ -z "\$PROXMOX_CA_PEM" \]; then',
                    r"printf '%s\\n' \"\$PROXMOX_CA_PEM\" > \"\$\w+\"",
                )
                if re.search(r"\$\{?PROXMOX_CA_PEM", line) and not any(
                    re.fullmatch(a, line.strip()) for a in allowed
                ):
                    problems.append(
                        f"{job_id}: the CA goes elsewhere than the temp file: {line.strip()}"
                    )
    return problems


def pin_problems(workflow: dict[str, Any]) -> list[str]:
    """One CLI version per workflow, the SDK's; every pulumi/actions step uses it."""
    problems = []
    env = workflow.get("env", {})
    if any(touches_pulumi(job) for job in workflow["jobs"].values()):
        assert SDK_PIN, "requirements.txt pins pulumi=="
        if str(env.get("PULUMI_VERSION")) != SDK_PIN[1]:
            problems.append(
                f"env.PULUMI_VERSION {env.get('PULUMI_VERSION')!r} is not the SDK's {SDK_PIN[1]}"
            )
    for job_id, step in steps(workflow):
        version = step.get("with", {}).get("pulumi-version")
        if step.get("uses", "").startswith("pulumi/actions@") and version != PIN_EXPRESSION:
            problems.append(f"{job_id}: pulumi/actions without pulumi-version: {PIN_EXPRESSION}")
    return problems


RULES = [runner_problems, fork_problems, host_problems, github_hosted_problems, pin_problems]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_keeps_the_runner_rules(path: Path, rule: Any) -> None:
    assert rule(load(path)) == []


def test_the_pulumi_jobs_are_the_ones_expected() -> None:
    """The detector finds exactly the jobs that reach Proxmox (so the rules are not vacuous)."""
    found = {
        (path.name, job_id)
        for path in WORKFLOWS
        for job_id, job in load(path)["jobs"].items()
        if touches_pulumi(job)
    }
    assert found == {
        ("deploy-dev.yml", "deploy"),
        ("deploy-prod.yml", "plan"),
        ("deploy-prod.yml", "apply"),
        ("drift.yml", "drift"),
        ("preview.yml", "preview"),
    }
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            if not touches_pulumi(job):  # synth (also for forks) and the notifications
                assert job["runs-on"] == GITHUB_HOSTED, (path.name, job_id)


def test_no_workflow_text_mentions_pull_request_target() -> None:
    for path in WORKFLOWS:
        assert "pull_request_target" not in path.read_text(), path.name


def test_a_fork_pr_gets_only_the_offline_synth_and_the_policy_check() -> None:
    workflow = workflow_named("preview.yml")
    synth_job = workflow["jobs"]["synth"]
    assert "if" not in synth_job and synth_job["runs-on"] == GITHUB_HOSTED
    run = "\n".join(s.get("run", "") for s in synth_job["steps"])
    assert "for stack in host dev prod; do" in run
    assert "python -m policy.check host dev prod" in run
    for job_id, job in workflow["jobs"].items():
        if self_hosted(job):
            assert job["if"] == SAME_REPO, job_id


def test_runs_on_switch_evaluates_like_github() -> None:
    job = workflow_named("deploy-dev.yml")["jobs"]["deploy"]
    assert runner(job, None) == SELF_HOSTED
    assert runner(job, "") == SELF_HOSTED
    assert runner(job, "self-hosted") == SELF_HOSTED
    assert runner(job, SWITCH_VALUE) == GITHUB_HOSTED


# Deliberately broken workflows: each mutation must make its rule report a problem.
Mutation = tuple[str, Any, Any]


def _set(path: list[Any], value: Any) -> Any:
    def mutate(workflow: dict[str, Any]) -> None:
        node = workflow
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return mutate


_DELETE = object()


def _step(job: str, predicate: Any) -> Any:
    def find(workflow: dict[str, Any]) -> dict[str, Any]:
        return next(s for s in workflow["jobs"][job]["steps"] if predicate(s))

    return find


def _edit_step(job: str, predicate: Any, edit: Any) -> Any:
    return lambda workflow: edit(_step(job, predicate)(workflow))


def _add_step(job: str, step: dict[str, Any], at: int = -1) -> Any:
    def mutate(workflow: dict[str, Any]) -> None:
        jobsteps = workflow["jobs"][job]["steps"]
        jobsteps.insert(len(jobsteps) if at == -1 else at, step)

    return mutate


def _add_job(job_id: str, job: dict[str, Any]) -> Any:
    return lambda workflow: workflow["jobs"].__setitem__(job_id, job)


def _is_tailnet(s: dict[str, Any]) -> bool:
    return s.get("uses", "").startswith("tailscale/")


def _is_ca(s: dict[str, Any]) -> bool:
    return "PROXMOX_CA_PEM" in s.get("env", {})


def _is_up(s: dict[str, Any]) -> bool:
    return "pulumi up" in s.get("run", "")


def _move_ca_last(job: str) -> Any:
    def mutate(workflow: dict[str, Any]) -> None:
        jobsteps = workflow["jobs"][job]["steps"]
        jobsteps.append(jobsteps.pop(next(i for i, s in enumerate(jobsteps) if _is_ca(s))))

    return mutate


SWITCH_EXPR = (
    "${{ fromJSON(vars.SMOKER_RUNNER == 'github-hosted' && '\"ubuntu-latest\"' || '%s') }}"
)
MUTATIONS: dict[str, Mutation] = {
    # (a) runner
    "deploy on ubuntu-latest only": (
        "deploy-dev.yml",
        runner_problems,
        _set(["jobs", "deploy", "runs-on"], "ubuntu-latest"),
    ),
    "preview on fixed self-hosted labels": (
        "preview.yml",
        runner_problems,
        _set(["jobs", "preview", "runs-on"], ["self-hosted", "smart-smoker"]),
    ),
    "switch on another variable": (
        "drift.yml",
        runner_problems,
        _set(
            ["jobs", "drift", "runs-on"],
            SWITCH_EXPR.replace("SMOKER_RUNNER", "OTHER") % '["self-hosted", "smart-smoker"]',
        ),
    ),
    "apply on any self-hosted runner": (
        "deploy-prod.yml",
        runner_problems,
        _set(["jobs", "apply", "runs-on"], SWITCH_EXPR % '["self-hosted"]'),
    ),
    "a new job running pulumi on GitHub": (
        "deploy-dev.yml",
        runner_problems,
        _add_job(
            "extra",
            {"runs-on": "ubuntu-latest", "steps": [{"run": "pulumi refresh --stack dev --yes"}]},
        ),
    ),
    "a new job holding the passphrase on GitHub": (
        "drift.yml",
        runner_problems,
        _add_job(
            "extra",
            {
                "runs-on": "ubuntu-latest",
                "env": {"P": "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"},
                "steps": [],
            },
        ),
    ),
    # (b) forks
    "preview without the same-repo condition": (
        "preview.yml",
        fork_problems,
        _set(["jobs", "preview", "if"], _DELETE),
    ),
    "same-repo condition or'ed away": (
        "preview.yml",
        fork_problems,
        _set(["jobs", "preview", "if"], f"{SAME_REPO} || github.event_name == 'pull_request'"),
    ),
    "pull_request_target trigger": (
        "deploy-dev.yml",
        fork_problems,
        _set(["on", "pull_request_target"], {}),
    ),
    "deploy on pull requests": ("deploy-dev.yml", fork_problems, _set(["on", "pull_request"], {})),
    "drift from workflow_run": (
        "drift.yml",
        fork_problems,
        _set(["on", "workflow_run"], {"workflows": ["preview"]}),
    ),
    # (c) host
    "deploy-dev applies host": (
        "deploy-dev.yml",
        host_problems,
        _edit_step(
            "deploy",
            _is_up,
            lambda s: s.__setitem__("run", s["run"].replace("--stack dev", "--stack host")),
        ),
    ),
    "drift matrix with host": (
        "drift.yml",
        host_problems,
        _set(["jobs", "drift", "strategy", "matrix", "stack"], ["host", "dev", "prod"]),
    ),
    "preview of host": (
        "preview.yml",
        host_problems,
        _set(["jobs", "preview", "strategy", "matrix", "stack"], ["dev", "prod", "host"]),
    ),
    "pulumi/actions stack-name host": (
        "preview.yml",
        host_problems,
        _edit_step(
            "preview",
            lambda s: "command" in s.get("with", {}),
            lambda s: s["with"].__setitem__("stack-name", "host"),
        ),
    ),
    "short flag": (
        "deploy-dev.yml",
        host_problems,
        _add_step("deploy", {"run": "pulumi up -s host --yes"}),
    ),
    "equals flag in a pipeline": (
        "deploy-prod.yml",
        host_problems,
        _add_step(
            "apply", {"run": "set -o pipefail\npulumi refresh --yes --stack=host 2>&1 | tee x.log"}
        ),
    ),
    "stack chosen by select": (
        "deploy-dev.yml",
        host_problems,
        _add_step("deploy", {"run": "pulumi stack select host && pulumi up --yes"}),
    ),
    "stack through an env variable": (
        "deploy-dev.yml",
        host_problems,
        _add_step(
            "deploy", {"env": {"TARGET": "host"}, "run": 'pulumi destroy --stack "$TARGET" --yes'}
        ),
    ),
    "stack through a shell loop": (
        "drift.yml",
        host_problems,
        _add_step(
            "drift", {"run": 'for s in host dev; do\n  pulumi state delete --stack "$s" urn\ndone'}
        ),
    ),
    "continued command line": (
        "deploy-dev.yml",
        host_problems,
        _add_step(
            "deploy",
            {"run": "pulumi import --yes \\\n  --stack host proxmoxve:index/pool:Pool p pool"},
        ),
    ),
    "make up": (
        "deploy-dev.yml",
        host_problems,
        _add_step("deploy", {"run": "make up STACK=host"}),
    ),
    # (d) the GitHub-hosted path
    "tailnet join always": (
        "deploy-dev.yml",
        github_hosted_problems,
        _edit_step("deploy", _is_tailnet, lambda s: s.pop("if")),
    ),
    "tailnet join on the runner": (
        "drift.yml",
        github_hosted_problems,
        _edit_step("drift", _is_tailnet, lambda s: s.__setitem__("if", ON_SELF_HOSTED)),
    ),
    "no CA step": (
        "drift.yml",
        github_hosted_problems,
        lambda w: w["jobs"]["drift"].__setitem__(
            "steps", [s for s in w["jobs"]["drift"]["steps"] if not _is_ca(s)]
        ),
    ),
    "CA from a plain value": (
        "deploy-prod.yml",
        github_hosted_problems,
        _edit_step(
            "apply",
            _is_ca,
            lambda s: s["env"].__setitem__("PROXMOX_CA_PEM", "-----BEGIN CERTIFICATE-----"),
        ),
    ),
    "CA echoed": (
        "preview.yml",
        github_hosted_problems,
        _edit_step(
            "preview", _is_ca, lambda s: s.__setitem__("run", s["run"] + 'echo "$PROXMOX_CA_PEM"\n')
        ),
    ),
    "CA not put in the system store": (
        "deploy-dev.yml",
        github_hosted_problems,
        _edit_step(
            "deploy",
            _is_ca,
            lambda s: s.__setitem__("run", s["run"].replace("sudo update-ca-certificates", "true")),
        ),
    ),
    "CA installed after the apply": (
        "deploy-dev.yml",
        github_hosted_problems,
        _move_ca_last("deploy"),
    ),
    "CLI installed on the runner too": (
        "deploy-prod.yml",
        github_hosted_problems,
        _edit_step(
            "plan", lambda s: s.get("uses", "").startswith("pulumi/actions@"), lambda s: s.pop("if")
        ),
    ),
    "runner CLI not checked": (
        "preview.yml",
        github_hosted_problems,
        lambda w: w["jobs"]["preview"].__setitem__(
            "steps",
            [s for s in w["jobs"]["preview"]["steps"] if "$PULUMI_VERSION" not in s.get("run", "")],
        ),
    ),
    # the pin
    "another CLI version": ("drift.yml", pin_problems, _set(["env", "PULUMI_VERSION"], "3.200.0")),
    "a literal pulumi-version": (
        "deploy-dev.yml",
        pin_problems,
        _edit_step(
            "deploy",
            lambda s: s.get("uses", "").startswith("pulumi/actions@"),
            lambda s: s["with"].__setitem__("pulumi-version", "3.272.0"),
        ),
    ),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_each_rule_catches_a_broken_workflow(name: str) -> None:
    workflow_file, rule, mutate = MUTATIONS[name]
    workflow = workflow_named(workflow_file)
    assert rule(copy.deepcopy(workflow)) == [], "the unbroken workflow passes"
    broken = copy.deepcopy(workflow)
    mutate(broken)
    assert rule(broken), f"{rule.__name__} missed: {name}"
