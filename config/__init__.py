"""The stack configuration: typed, frozen, validated once before any resource is declared.

`parse_config()` is the pure core (raw `key -> string` map plus the set of secret keys), shared
by the Pulumi program, `synth` and the operator CLI. Every problem is collected and raised together
as one `ConfigError`, each naming the config key, the bad value (never a secret's value) and the
fix. This package imports nothing else of the project, and not Pulumi.
"""

from config.app import APP_IMAGES, AppSettings, DeploySettings, HealthcheckSettings, Images
from config.backups import BackupSettings, OffsiteSettings, Retention, VzdumpSettings
from config.baseline import BaselineSettings, CrunSettings, DockerSettings, Fail2banSettings
from config.errors import PROJECT, ConfigError, Problem
from config.guests import (
    DeviceSettings,
    Guest,
    GuestSpec,
    HostSpec,
    KioskSettings,
    LxcFeatures,
    is_device,
)
from config.loader import parse_config
from config.proxmox import (
    VENDOR_DATA_FILE_NAME,
    VMID_MAX,
    VMID_MIN,
    Download,
    HostShared,
    HostStackRef,
    NetworkSettings,
    ProxmoxSettings,
)
from config.runner import PulumiCliSettings, RunnerSettings
from config.secrets import SECRET_KEYS, Secret, SecretKey, Secrets
from config.stack import (
    APP_ENVIRONMENTS,
    ENVIRONMENTS,
    CommonConfig,
    HostStackConfig,
    StackConfig,
    StackFile,
)
from config.tailscale import ServeDirectory, ServeMapping, TailnetSettings, TailscaleSettings

__all__ = [
    "APP_ENVIRONMENTS",
    "APP_IMAGES",
    "ENVIRONMENTS",
    "PROJECT",
    "SECRET_KEYS",
    "VENDOR_DATA_FILE_NAME",
    "VMID_MAX",
    "VMID_MIN",
    "AppSettings",
    "BackupSettings",
    "BaselineSettings",
    "CommonConfig",
    "ConfigError",
    "CrunSettings",
    "DeploySettings",
    "DeviceSettings",
    "DockerSettings",
    "Download",
    "Fail2banSettings",
    "Guest",
    "GuestSpec",
    "HealthcheckSettings",
    "HostShared",
    "HostSpec",
    "HostStackConfig",
    "HostStackRef",
    "Images",
    "KioskSettings",
    "LxcFeatures",
    "NetworkSettings",
    "OffsiteSettings",
    "Problem",
    "ProxmoxSettings",
    "PulumiCliSettings",
    "Retention",
    "RunnerSettings",
    "Secret",
    "SecretKey",
    "Secrets",
    "ServeDirectory",
    "ServeMapping",
    "StackConfig",
    "StackFile",
    "TailnetSettings",
    "TailscaleSettings",
    "VzdumpSettings",
    "is_device",
    "parse_config",
]
