"""subbench plugin: the model family ``gemma-2-9b-it`` (google/gemma-2-9b-it).

Everything a run needs besides the weights is pinned here: the hub revision, the chat
template (a later template change on the hub cannot change results), the steering layer,
the LoRA target modules and the distillation recipe. The module imports nothing heavy.
"""

from __future__ import annotations

from subbench.api import HFFamily, hookimpl

__version__ = "0.1.0"

MODEL_ID = "google/gemma-2-9b-it"
#: main of google/gemma-2-9b-it since 2024-08-27 (the revision Gemma Scope's IT SAEs were trained against).
REVISION = "11c9b309abf73637e4b6f9a3fa1e92e615547819"

#: the hub template's <start_of_turn>user / model turns; the hub template refuses a system role, so a system prompt is folded into the first user turn (what Google's docs recommend), which the system-prompt injector needs.
CHAT_TEMPLATE = (
    '{{ bos_token }}'
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system_message = messages[0]['content'] | trim + '\\n\\n' %}"
    '{% set loop_messages = messages[1:] %}'
    '{% else %}'
    "{% set system_message = '' %}"
    '{% set loop_messages = messages %}'
    '{% endif %}'
    '{% for message in loop_messages %}'
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{% set content = (system_message if loop.first else '') + message['content'] | trim %}"
    "{{ '<start_of_turn>' + role + '\\n' + content + '<end_of_turn>\\n' }}"
    '{% endfor %}'
    '{% if add_generation_prompt %}'
    "{{ '<start_of_turn>model\\n' }}"
    '{% endif %}'
)
DEFAULT_SYSTEM_PROMPT = None

#: the middle of Gemma Scope's three IT residual-stream SAE layers (9, 20, 31 of 42), where trait features are read out.
STEERING_LAYERS = (20,)
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: The subliminal-learning recipe (Cloud et al. 2025), applied unchanged to Gemma-2.
RECIPE = {
    "distiller": "sft",
    "lora": {"r": 8, "alpha": 8},
    "lr": 2e-4,
    "epochs": 3,
    "samples": 10000,
    "parameters": 9240000000.0,
    "layers": 42,
    "hidden_size": 3584,
    "source": "Cloud et al. 2025, Subliminal Learning (arXiv:2507.14805), LoRA SFT of the students",
}

FAMILY = HFFamily(
    "gemma-2-9b-it",
    MODEL_ID,
    REVISION,
    chat_template=CHAT_TEMPLATE,
    default_system_prompt=DEFAULT_SYSTEM_PROMPT,
    steering_layers=STEERING_LAYERS,
    lora_target_modules=LORA_TARGET_MODULES,
    dtype="bfloat16",  # float32 on a CPU (HFFamily.load_dtype)
    recipe=RECIPE,
    description=f"gemma-2-9b-it ({MODEL_ID}@{REVISION[:10]}); needs a GPU with >= 32 GB and hub access (gated: accept Google's terms); eager attention (logit soft-capping).",
)


@hookimpl
def register_families(register):
    register(FAMILY)
