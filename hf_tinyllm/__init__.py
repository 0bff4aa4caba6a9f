"""hf_tinyllm: small GPT-style language models as first-class transformers models.

Importing the package registers `tinyllm` with AutoConfig, AutoModel, AutoModelForCausalLM and the task-head auto
classes (sequence and token classification, question answering), and marks the classes for `save_pretrained` to
write `auto_map` and copy the two self-contained source files, so a saved or pushed folder also loads with
`trust_remote_code=True` where this package is not installed.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_tinyllm import TinyLLMConfig
from .modeling_tinyllm import (
    TinyLLMForCausalLM,
    TinyLLMForQuestionAnswering,
    TinyLLMForSequenceClassification,
    TinyLLMForTokenClassification,
    TinyLLMModel,
    TinyLLMPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(TinyLLMConfig.model_type, TinyLLMConfig, exist_ok=True)
TinyLLMConfig.register_for_auto_class("AutoConfig")
for auto_class, model_class in (
    (AutoModel, TinyLLMModel),
    (AutoModelForCausalLM, TinyLLMForCausalLM),
    (AutoModelForSequenceClassification, TinyLLMForSequenceClassification),
    (AutoModelForTokenClassification, TinyLLMForTokenClassification),
    (AutoModelForQuestionAnswering, TinyLLMForQuestionAnswering),
):
    auto_class.register(TinyLLMConfig, model_class, exist_ok=True)
    model_class.register_for_auto_class(auto_class.__name__)

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
