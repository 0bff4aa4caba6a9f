"""hf_tinyllm: small GPT-style language models as first-class transformers models.

Importing the package registers `tinyllm` with AutoConfig, AutoModel, AutoModelForCausalLM and the task-head auto
classes (sequence and token classification, question answering), and marks the classes for `save_pretrained` to
write `auto_map` and copy the two self-contained source files, so a saved or pushed folder also loads with
`trust_remote_code=True` where this package is not installed.
"""

import transformers
from transformers import AutoConfig

from . import modeling_tinyllm
from .configuration_tinyllm import TINYLLM_CODE_VERSION as __version__
from .configuration_tinyllm import TinyLLMConfig
from .modeling_tinyllm import (
    TinyLLMForCausalLM,
    TinyLLMForQuestionAnswering,
    TinyLLMForSequenceClassification,
    TinyLLMForTokenClassification,
    TinyLLMModel,
    TinyLLMPreTrainedModel,
)

AutoConfig.register(TinyLLMConfig.model_type, TinyLLMConfig, exist_ok=True)
TinyLLMConfig.register_for_auto_class("AutoConfig")
for auto_name, class_name in TinyLLMPreTrainedModel._auto_map_classes.items():  # the one list of them
    model_class = getattr(modeling_tinyllm, class_name)
    getattr(transformers, auto_name).register(TinyLLMConfig, model_class, exist_ok=True)
    model_class.register_for_auto_class(auto_name)

__all__ = [
    "TinyLLMConfig",
    "TinyLLMForCausalLM",
    "TinyLLMForQuestionAnswering",
    "TinyLLMForSequenceClassification",
    "TinyLLMForTokenClassification",
    "TinyLLMModel",
    "TinyLLMPreTrainedModel",
    "__version__",
]
