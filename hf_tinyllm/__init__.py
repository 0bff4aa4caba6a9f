"""hf_tinyllm: small GPT-style language models as first-class transformers models.

Importing the package registers `tinyllm` with AutoConfig / AutoModel / AutoModelForCausalLM, and marks the classes
for `save_pretrained` to write `auto_map` and copy the two self-contained source files, so a saved or pushed folder
also loads with `trust_remote_code=True` where this package is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_tinyllm import TinyLLMConfig
from .modeling_tinyllm import TinyLLMForCausalLM, TinyLLMModel, TinyLLMPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register(TinyLLMConfig.model_type, TinyLLMConfig, exist_ok=True)
AutoModel.register(TinyLLMConfig, TinyLLMModel, exist_ok=True)
AutoModelForCausalLM.register(TinyLLMConfig, TinyLLMForCausalLM, exist_ok=True)
TinyLLMConfig.register_for_auto_class("AutoConfig")
TinyLLMModel.register_for_auto_class("AutoModel")
TinyLLMForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["TinyLLMConfig", "TinyLLMForCausalLM", "TinyLLMModel", "TinyLLMPreTrainedModel", "__version__"]
