"""LoRA and DMLoRA adapters, split the way PEFT splits a tuner: options, layers, injection.

- ``options``: validated, frozen method options (``AdapterMethod``).
- ``layer``: the ``AdapterLayer`` base wrapping one ``nn.Linear`` (forward/merge/unmerge/delta_weight).
- ``lora`` / ``dmlora``: the two layer variants; ``dmlora`` also holds the training-time controller.
- ``inject``: apply a ``RankSchedule`` to any torch model; merge (and unload), unmerge, read the
  effective schedule.
- ``export``: write a PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``).
"""

from ranktune.trainer.adapters.inject import (
    adapter_layers,
    inject_adapters,
    merge_adapters,
    merge_and_unload,
    unmerge_adapters,
)
from ranktune.trainer.adapters.options import AdapterMethod, DMLoraOptions

__all__ = [
    "AdapterMethod",
    "DMLoraOptions",
    "adapter_layers",
    "inject_adapters",
    "merge_adapters",
    "merge_and_unload",
    "unmerge_adapters",
]
