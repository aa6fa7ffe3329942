"""Backups: MongoDB dumps on the guest (`app.backups`) and Proxmox vzdump (`app.vzdump`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, model_validator

from config.errors import fail
from config.fields import Bool, Int, Model, Text, one_of, pattern, ranged

_CALENDAR = r"((Mon|Tue|Wed|Thu|Fri|Sat|Sun) )?([01]\d|2[0-3]):[0-5]\d"
Calendar = Annotated[
    Text,
    pattern(
        _CALENDAR,
        "must be HH:MM, optionally after a weekday (e.g. 'Sun 03:00')",
        'write e.g. "02:00" or "Sun 03:00"',
    ),
]
Keep = Annotated[Int, ranged(0, 1000, fix="keep e.g. 7/4/12")]


class Retention(Model):
    """How many backups of each class are kept."""

    daily: Keep = Field(7, description="daily backups kept")
    weekly: Keep = Field(4, description="weekly backups kept")
    monthly: Keep = Field(12, description="monthly backups kept")

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        if self.daily == self.weekly == self.monthly == 0:
            raise fail(
                "keeps no backup at all",
                "keep at least one class",
                value=[self.daily, self.weekly, self.monthly],
            )
        return self


class OffsiteSettings(Model):
    """Off-guest copies of every dump, in a restic repository outside the guest's failure domain.

    Where the repository is and how to reach it are secrets (`resticRepository`,
    `resticPassword`, and per kind of repository `resticSshPrivateKey` + `resticSshKnownHosts`
    or `resticAwsAccessKeyId` + `resticAwsSecretAccessKey`); see docs/backups.md."""

    enabled: Bool = Field(False, description="ship every verified dump to the restic repository")
    read_data_subset: Annotated[
        Text,
        pattern(
            r"([1-9]|[1-9]\d|100)%",
            "must be a percentage from 1% to 100%",
            'write e.g. "5%" (the share of the repository\'s data read back by each validation)',
        ),
    ] = Field("5%", description="restic check --read-data-subset on every validation run")


class BackupSettings(Model):
    """MongoDB dumps on the guest: nightly, verified weekly, one before every deploy."""

    retention: Retention = Field(Retention(), description="dumps kept")
    dump_time: Calendar = Field("02:00", description="systemd OnCalendar time of the nightly dump")
    validate_calendar: Calendar = Field(
        "Sun 03:00", description="systemd OnCalendar of the restore test"
    )
    max_age_hours: Annotated[Int, ranged(1, 8760, "hours")] = Field(
        48, description="the newest dump older than this is an alert"
    )
    pre_deploy_keep: Annotated[Int, ranged(1, 1000)] = Field(
        10, description="pre-deploy backups kept (one per release attempt)"
    )
    offsite: OffsiteSettings = Field(
        OffsiteSettings(), description="off-guest copies in a restic repository"
    )


class VzdumpSettings(Model):
    """The Proxmox backup job of the stack's guests."""

    schedule: Calendar = Field("01:00", description="when vzdump runs")
    storage: Annotated[
        Text, pattern(r"[A-Za-z][A-Za-z0-9_.-]*", "is not a datastore id", "use e.g. local")
    ] = Field("local", description="the datastore backups go to")
    mode: Annotated[Text, one_of("snapshot", "suspend", "stop")] = Field(
        "snapshot", description="vzdump mode"
    )
    compress: Annotated[Text, one_of("zstd", "gzip", "lzo", "0")] = Field(
        "zstd", description="compression"
    )
    retention: Retention = Field(Retention(), description="backups kept")


@dataclass(frozen=True)
class ResticRepository:
    """The secret `resticRepository`, understood. For SFTP the connection moves into an SSH
    config file (host, port, user) and restic sees only an alias, so no command line on the
    guest names the repository's location."""

    kind: Literal["sftp", "rest", "s3"]
    text: str  # what restic is given (for sftp: the alias form)
    host: str = ""  # sftp only
    port: int = 22
    user: str = ""
    path: str = ""


SFTP_ALIAS = "smoker-restic"  # the Host of the SSH config restic's sftp command uses
_SFTP_URL = re.compile(
    r"sftp://(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s]+)(?::(?P<port>\d+))?/(?P<path>\S+)"
)
_SFTP_SCP = re.compile(r"sftp:(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s]+):(?P<path>\S+)")
REPOSITORY_FORMS = (
    "sftp:user@host:/srv/restic/<stack>, sftp://user@host:2222//srv/restic/<stack>, "
    "rest:https://user:password@host:8000/<stack> or s3:https://endpoint/bucket/<stack>"
)


def parse_restic_repository(text: str) -> ResticRepository | str:
    """The repository, or what is wrong with it (never quoting the value: it is a secret)."""
    text = text.strip()
    if "\n" in text or " " in text:
        return "must be one line without spaces"
    if text.startswith("sftp://"):
        match = _SFTP_URL.fullmatch(text)
        if not match:
            return "is not an sftp://[user@]host[:port]/path URL"
        path = match["path"]  # sftp://host//abs is absolute, sftp://host/rel relative to home
        port = int(match["port"] or 22)
        if not 1 <= port <= 65535:
            return "has a port outside 1..65535"
    elif text.startswith("sftp:"):
        match = _SFTP_SCP.fullmatch(text)
        if not match:
            return "is not sftp:[user@]host:path"
        path, port = match["path"], 22
    elif re.fullmatch(r"rest:https?://\S+", text):
        return ResticRepository("rest", text)
    elif re.fullmatch(r"s3:\S+", text):
        return ResticRepository("s3", text)
    else:
        return "names a kind of repository this program does not set up"
    return ResticRepository(
        "sftp",
        f"sftp:{SFTP_ALIAS}:{path}",
        host=match["host"],
        port=port,
        user=match["user"] or "root",
        path=path,
    )
