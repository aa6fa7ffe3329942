"""Entry point of the policy pack: only builds the pack (this starts a server and blocks)."""

from pulumi_policy import EnforcementLevel, PolicyPack
from smoker_policies import crossguard_policies

PolicyPack(
    name="smoker-infra",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=crossguard_policies(),
)
