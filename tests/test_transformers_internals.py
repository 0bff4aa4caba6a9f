"""The transformers internals the shipped remote code relies on, one test each, named after the internal.

`modeling_tinyllm.py`, `configuration_tinyllm.py` and `generation_tinyllm.py` run as remote code on whatever
transformers a user has. Beyond transformers' top-level API they touch only the names below; when a release moves
one, its test fails naming it, before users meet wrong text. `test_the_list_is_complete` keeps the list honest: every
`from transformers.<submodule> import ...` in the three files must have its test here.
"""

import ast
import inspect
from collections.abc import Callable

import pytest
import torch
import transformers
from conftest import REPO_ROOT, tiny_model

from hf_tinyllm.configuration_tinyllm import ROPE_TYPES

REMOTE_CODE_FILES = ("modeling_tinyllm.py", "configuration_tinyllm.py", "generation_tinyllm.py")


def _parameters(function: Callable) -> set[str]:
    return set(inspect.signature(function).parameters)


def check_create_causal_mask() -> None:
    from transformers.masking_utils import create_causal_mask

    names = _parameters(create_causal_mask)
    # and_mask_function: how packed documents are kept apart without a host sync (same_document_mask)
    assert {"config", "inputs_embeds", "attention_mask", "position_ids", "and_mask_function"} <= names, names
    assert {"cache", "past_key_values"} & names, f"no cache argument among {sorted(names)}"


def check_generic_heads() -> None:
    from transformers import modeling_layers

    for name in ("GenericForSequenceClassification", "GenericForTokenClassification", "GenericForQuestionAnswering"):
        head = getattr(modeling_layers, name)
        assert "forward" in vars(head), f"{name} has no forward of its own"


def check_model_outputs() -> None:
    from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

    for output in (BaseModelOutputWithPast, CausalLMOutputWithPast):
        fields = set(output.__dataclass_fields__)
        assert {"cache", "past_key_values"} & fields, f"{output.__name__} has no cache field among {sorted(fields)}"
    assert {"loss", "logits", "hidden_states", "attentions"} <= set(CausalLMOutputWithPast.__dataclass_fields__)


def check_rope_init_functions() -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update

    missing = set(ROPE_TYPES) - {"default"} - set(ROPE_INIT_FUNCTIONS)
    assert not missing, f"RoPE types no longer in ROPE_INIT_FUNCTIONS: {sorted(missing)}"
    assert callable(dynamic_rope_update)


def check_attention_functions() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, slice_logits_to_keep

    for implementation in ("sdpa", "flex_attention", "flash_attention_2"):
        assert implementation in ALL_ATTENTION_FUNCTIONS, implementation
    assert callable(ALL_ATTENTION_FUNCTIONS.get_interface("sdpa", None))
    hidden = torch.arange(12.0).view(1, 4, 3)
    assert torch.equal(slice_logits_to_keep(hidden, 1), hidden[:, -1:])
    assert torch.equal(slice_logits_to_keep(hidden, 0), hidden)


def check_output_decorators() -> None:
    from transformers.utils import TransformersKwargs, can_return_tuple, logging
    from transformers.utils.generic import merge_with_config_defaults
    from transformers.utils.output_capturing import capture_outputs

    assert callable(can_return_tuple) and callable(merge_with_config_defaults) and callable(capture_outputs)
    assert callable(logging.get_logger)
    assert "output_attentions" in TransformersKwargs.__annotations__


def check_processing_unpack() -> None:
    from transformers.processing_utils import Unpack

    assert Unpack is not None


def check_initialization() -> None:
    from transformers import initialization

    for name in ("normal_", "zeros_", "copy_"):
        assert callable(getattr(initialization, name)), name


def check_activations() -> None:
    from transformers.activations import ACT2FN

    for name in ("silu", "gelu_pytorch_tanh", "relu2"):
        assert name in ACT2FN, name


def check_standardize_rope_params() -> None:
    assert callable(transformers.PreTrainedConfig.standardize_rope_params)


def check_custom_generate_hook() -> None:
    """fast_decode hands `generate` its loop as a callable `custom_generate`, which receives the arguments
    `GenerationMixin._sample` takes, and its loop reads `GenerationConfig._pad_token_tensor`."""
    assert "custom_generate" in _parameters(transformers.GenerationMixin.generate)
    sample = _parameters(transformers.GenerationMixin._sample)
    assert {"input_ids", "logits_processor", "stopping_criteria", "generation_config"} <= sample, sample
    model = tiny_model()
    ids = torch.tensor([[5, 6, 7]])
    out = model.generate(ids, max_new_tokens=2, do_sample=False, fast_decode=True, pad_token_id=0)
    assert torch.equal(out, model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0))


INTERNALS: dict[str, Callable[[], None]] = {
    "transformers.masking_utils.create_causal_mask": check_create_causal_mask,
    "transformers.modeling_layers.{GenericForSequenceClassification,GenericForTokenClassification,"
    "GenericForQuestionAnswering}": check_generic_heads,
    "transformers.modeling_outputs.{BaseModelOutputWithPast,CausalLMOutputWithPast}": check_model_outputs,
    "transformers.modeling_rope_utils.{ROPE_INIT_FUNCTIONS,dynamic_rope_update}": check_rope_init_functions,
    "transformers.modeling_utils.{ALL_ATTENTION_FUNCTIONS,slice_logits_to_keep}": check_attention_functions,
    "transformers.utils.{TransformersKwargs,can_return_tuple,logging,generic.merge_with_config_defaults,"
    "output_capturing.capture_outputs}": check_output_decorators,
    "transformers.processing_utils.Unpack": check_processing_unpack,
    "transformers.initialization.{normal_,zeros_,copy_}": check_initialization,
    "transformers.activations.ACT2FN": check_activations,
    "transformers.PreTrainedConfig.standardize_rope_params": check_standardize_rope_params,
    "transformers.GenerationMixin.generate(custom_generate=callable), GenerationConfig._pad_token_tensor": (
        check_custom_generate_hook
    ),
}


@pytest.mark.parametrize("internal", sorted(INTERNALS))
def test_internal_is_where_the_remote_code_expects_it(internal: str) -> None:
    try:
        INTERNALS[internal]()
    except (ImportError, AttributeError, AssertionError, TypeError) as error:
        pytest.fail(
            f"transformers {transformers.__version__} moved {internal}, which the shipped remote code uses: "
            f"{type(error).__name__}: {error}"
        )


def _submodule_imports(path) -> set[str]:
    """`transformers.<submodule>.<name>` for each name a file imports from below transformers' top level."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transformers."):
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        if isinstance(node, ast.ImportFrom) and node.module == "transformers":
            found |= {f"transformers.{a.name}" for a in node.names if a.name[:1].islower()}  # submodules
    return found


def test_the_list_is_complete() -> None:
    """Every internal import of the remote code is covered by a check above (a name appears in an INTERNALS key)."""
    listed = " ".join(INTERNALS)
    for file in REMOTE_CODE_FILES:
        for dotted in _submodule_imports(REPO_ROOT / "hf_tinyllm" / file):
            module, name = dotted.rsplit(".", 1)
            assert name in listed and module.rsplit(".", 1)[-1] in listed, (
                f"{file} imports {dotted}: add a check for it to INTERNALS in {__file__}"
            )


def test_a_kv_cache_under_a_name_this_code_lacks_stops_with_the_versions_and_the_fix():
    """Should a release pass the cache under yet another name, the model stops instead of ignoring it (which is what
    0.1.0's code did on transformers 5.24: fluent, wrong text)."""
    from transformers import DynamicCache

    model = tiny_model()
    with pytest.raises(TypeError) as raised:
        model(torch.tensor([[5, 6, 7]]), kv_cache=DynamicCache(config=model.config))
    message = str(raised.value)
    for part in (f"cannot serve transformers {transformers.__version__}", "`kv_cache`", "tested on transformers",
                 "pip install 'transformers==", "tinyllm refresh-code"):  # fmt: skip
        assert part in message, (part, message)


def test_a_release_without_either_cache_name_fails_at_import():
    from hf_tinyllm.modeling_tinyllm import _cache_name

    assert _cache_name({"cache": 1}, "x") == "cache" and _cache_name({"past_key_values": 1}, "x") == "past_key_values"
    with pytest.raises(ImportError, match="create_causal_mask takes the KV cache under neither"):
        _cache_name({"kv": 1}, "create_causal_mask")
