"""Configuration: load (TOML + conf.d/ + profiles/), resolve secrets, validate, redact.

The rest of the gateway imports from here only. A load returns one immutable :class:`Config`; a
reload builds a new one and the caller swaps the reference.
"""

from lm_gateway.config.errors import ConfigError
from lm_gateway.config.loader import (
    DEFAULT_CONFIG_PATH,
    EMBEDDED_SOURCE,
    deep_merge,
    embedded_default_text,
    find_config_path,
    load_config,
    load_config_text,
)
from lm_gateway.config.redact import redact_url, redacted_view
from lm_gateway.config.schema import (
    BackendConfig,
    ClientConfig,
    Config,
    GatewayConfig,
    Mode,
    ProfileConfig,
    Provider,
    RuleConfig,
    Secret,
    SecretSource,
    TierConfig,
)
from lm_gateway.config.secrets import SecretLookup, resolve_secret

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "EMBEDDED_SOURCE",
    "BackendConfig",
    "ClientConfig",
    "Config",
    "ConfigError",
    "GatewayConfig",
    "Mode",
    "ProfileConfig",
    "Provider",
    "RuleConfig",
    "Secret",
    "SecretLookup",
    "SecretSource",
    "TierConfig",
    "deep_merge",
    "embedded_default_text",
    "find_config_path",
    "load_config",
    "load_config_text",
    "redact_url",
    "redacted_view",
    "resolve_secret",
]
