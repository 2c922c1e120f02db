"""Who gets what in the CI files: secrets, token permissions, environments, branches.

Read from the files themselves (this repository's copies, byte-equal to the template's
rendering: tests/unit/test_template.py). What GitHub and GitLab enforce beyond the files
(environment branch rules, protected variables) is in docs/ci-files.md; the runs of the files
for real are tests/integration/test_ci_*.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "mlops.yaml"
GITLAB = ROOT / ".gitlab-ci.yml"

# What publishes or writes: the registry, the signing key, the DVC remote.
PUBLISHING = {
    "CONTAINER_REGISTRY_HOST", "CONTAINER_REGISTRY_USERNAME", "CONTAINER_REGISTRY_PASSWORD",
    "GCP_CONTAINER_REGISTRY_HOST", "GOOGLE_SERVICE_ACCOUNT_KEY", "SIGNING_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
}  # fmt: skip
ENVIRONMENTS = {"publish", "staging", "production"}  # each: deployments from main only
MAIN_ONLY = "github.ref == 'refs/heads/main'"
PROMOTE_ENVIRONMENT = "${{ inputs.promote_to }}"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def secrets_of(node: object) -> set[str]:
    return set(re.findall(r"secrets\.(\w+)", json.dumps(node)))


def environment_of(job: dict) -> str | None:
    environment = job.get("environment")
    return environment.get("name") if isinstance(environment, dict) else environment


def runs_pull_request_code(job: dict) -> bool:
    """Every job but those that only run on main: a pull request's ref is refs/pull/N/merge."""
    return MAIN_ONLY not in str(job.get("if", ""))


def test_github_publishing_secrets_are_only_in_main_jobs_of_a_fixed_environment():
    flow = workflow()
    promote_to = (flow.get("on") or flow[True])["workflow_dispatch"]["inputs"]["promote_to"]
    for name, job in flow["jobs"].items():
        if not secrets_of(job) & PUBLISHING:
            continue
        environment = environment_of(job)
        assert environment is not None, f"{name}: publishing secrets outside an environment"
        names = set(promote_to["options"]) - {"none"}
        if environment == PROMOTE_ENVIRONMENT:
            assert promote_to["type"] == "choice" and names <= ENVIRONMENTS, promote_to
        else:
            assert environment in ENVIRONMENTS, f"{name}: environment {environment!r}"
        assert MAIN_ONLY in job["if"], f"{name} gets publishing secrets on any branch"


def test_github_promotion_is_to_a_fixed_list_of_environments_and_from_main_only():
    flow = workflow()
    promote_to = (flow.get("on") or flow[True])["workflow_dispatch"]["inputs"]["promote_to"]
    assert promote_to["type"] == "choice", "a free-text environment name creates environments"
    assert set(promote_to["options"]) == {"none", "staging", "production"}
    assert promote_to["default"] == "none"
    promote = flow["jobs"]["promote"]
    assert environment_of(promote) == PROMOTE_ENVIRONMENT
    assert MAIN_ONLY in promote["if"] and "inputs.promote_to != 'none'" in promote["if"]


def test_github_jobs_that_run_pull_request_code_get_a_read_only_token_and_no_secret():
    flow = workflow()
    assert flow["permissions"] == {"contents": "read"}
    pr_jobs = {n: j for n, j in flow["jobs"].items() if runs_pull_request_code(j)}
    for name, job in pr_jobs.items():
        permissions = job.get("permissions", flow["permissions"])
        writes = {scope for scope, level in permissions.items() if level != "read"}
        reports = any("nox -s report" in step.get("run", "") for step in job["steps"])
        assert writes <= ({"pull-requests"} if reports else set()), f"{name}: {permissions}"
        assert environment_of(job) is None, f"{name} runs pull-request code in an environment"
        for step in job["steps"]:
            allowed = {"GITHUB_TOKEN"} if "nox -s report" in step.get("run", "") else set()
            assert secrets_of(step) <= allowed, f"{name}: {step.get('name')}: {secrets_of(step)}"
    assert {"checks", "review"} <= set(pr_jobs), set(pr_jobs)


def test_github_packages_write_only_in_jobs_that_run_on_main_only():
    for name, job in workflow()["jobs"].items():
        if job.get("permissions", {}).get("packages") == "write":
            assert not runs_pull_request_code(job), f"{name}: packages: write on any branch"


# --------------------------------------------------------------------------- GitLab


def gitlab_jobs() -> dict[str, dict]:
    config = yaml.safe_load(GITLAB.read_text())
    keywords = {"stages", "workflow", "variables", "default", "include", "image", "cache"}
    return {n: j for n, j in config.items() if n not in keywords and not n.startswith(".")}


def main_only(job: dict) -> bool:
    rules = job.get("rules")
    return bool(rules) and all(
        rule.get("if") == "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH" for rule in rules
    )


def test_gitlab_registry_environment_is_main_only_and_a_protected_production_tier():
    jobs = gitlab_jobs()
    in_registry = {
        n for n, j in jobs.items() if (j.get("environment") or {}).get("name") == "registry"
    }
    assert in_registry == {"publish", "promote"}
    for name in in_registry:
        assert main_only(jobs[name]), f"{name} runs outside main"
        assert jobs[name]["environment"].get("deployment_tier") == "production", name


def test_gitlab_forge_token_environment_is_the_merge_request_report_only():
    jobs = gitlab_jobs()
    review = {
        n for n, j in jobs.items()
        if str((j.get("environment") or {}).get("name", "")).startswith("review/")
    }  # fmt: skip
    assert review == {"report"}
    rules = jobs["report"]["rules"]
    assert rules == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]


def test_gitlab_header_says_the_publishing_variables_are_protected():
    """Protection is a project setting, not YAML: the header is where an adopter reads it."""
    header = [line for line in GITLAB.read_text().splitlines() if line.startswith("#")]
    for name in ("CONTAINER_REGISTRY_*", "SIGNING_KEY", "AWS_ACCESS_KEY_ID", "GITLAB_TOKEN"):
        (line,) = (line for line in header if name in line)
        if name == "GITLAB_TOKEN":
            assert "project access token" in line and "review/*" in line, line
        else:
            assert "protected" in line, line
