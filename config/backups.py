"""Backups: MongoDB dumps on the guest (`app.backups`) and Proxmox vzdump (`app.vzdump`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from config.errors import fail
from config.fields import Int, Model, Text, one_of, pattern, ranged

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
