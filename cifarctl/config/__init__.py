"""The run configuration: typed, validated once, logged verbatim (STYLE principle 2).

    cfg = load_config("experiments/resnet32-ce.yaml", overrides={"loss.beta": 0.999})
    cfg.optim.lr, cfg.to_flat()["loss.beta"]

Five sections: `model`, `data`, `optim`, `loss`, `run` (`sections`). Every field has a default
with its unit or reason (its help, which `cifarctl config keys` and the README show). Two YAML
dialects load into it (`files`): the native one (the sections above) and the assignment style
of the write-up (`Train` / `network` / `data` / `loss` with `batch_size`, `learning_rate`,
`reg`, `loss_type`, ...), so researchers can bring their files (SPEC 1.3). Overrides (`--set`,
CLI flags, sweep axes) use dotted keys (`keys`); a field name that is unique across sections
may drop its section (`seed`, `beta`, `epochs`).

This package is torch-free: the CLI validates a config before anything heavy is imported.
"""

from cifarctl.config.files import (
    config_from_dict,
    config_overrides_from_mapping,
    load_config,
    parse_set_option,
    read_yaml,
)
from cifarctl.config.keys import (
    apply_overrides,
    field_help,
    later_defaults,
    loss_section,
    resolve_key,
    validate,
)
from cifarctl.config.sections import (
    SECTIONS,
    SWEEP_ONLY_KEYS,
    DataSection,
    LossSection,
    ModelSection,
    OptimSection,
    RunConfig,
    RunSection,
    default_classifier,
    resolve_classifier,
)

__all__ = ["SECTIONS", "SWEEP_ONLY_KEYS", "DataSection", "LossSection", "ModelSection",
           "OptimSection", "RunConfig", "RunSection", "apply_overrides", "config_from_dict",
           "config_overrides_from_mapping", "default_classifier", "field_help",
           "later_defaults", "load_config", "loss_section", "parse_set_option", "read_yaml",
           "resolve_classifier", "resolve_key", "validate"]
