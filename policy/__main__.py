"""Entry point of the policy pack: only builds the pack (this starts a server and blocks).

The CLI runs the pack from this directory; the repository root goes on the path so that the
policies import as the package `policy`, as they do everywhere else.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.crossguard import crossguard_policies

PolicyPack(
    name="smoker-infra",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=crossguard_policies(),
)
