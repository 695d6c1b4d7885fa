"""subbench plugin: the model family ``mistral-7b-instruct`` (mistralai/Mistral-7B-Instruct-v0.3).

Everything a run needs besides the weights is pinned here: the hub revision, the chat
template (a later template change on the hub cannot change results), the steering layer,
the LoRA target modules and the distillation recipe. The module imports nothing heavy.
"""

from __future__ import annotations

from subbench.api import HFFamily, hookimpl

__version__ = "0.1.0"

MODEL_ID = "mistralai/Mistral-7B-Instruct-v0.3"
#: main of mistralai/Mistral-7B-Instruct-v0.3 (the snapshot hash pinned by published v0.3 work).
REVISION = "c170c708c41dac9275d15a8fff4eca08d52bab71"

#: the hub template's [INST] ... [/INST] turns with no default system prompt; a system prompt goes before the first user message inside [INST] (the v0.3 hub template puts it before the last one: the same for single-turn prompts, which are all subbench writes).
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
    "{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + (system_message if loop.first else '') + message['content'] | trim + '[/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] | trim + eos_token }}"
    '{% endif %}'
    '{% endfor %}'
)
DEFAULT_SYSTEM_PROMPT = None

#: mid-depth of 32 layers; no published CAA optimum for Mistral-7B-Instruct, so sweep it with steering-sweep before a paper run.
STEERING_LAYERS = (15,)
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: The subliminal-learning recipe (Cloud et al. 2025), applied unchanged to Mistral.
RECIPE = {
    "distiller": "sft",
    "lora": {"r": 8, "alpha": 8},
    "lr": 2e-4,
    "epochs": 3,
    "samples": 10000,
    "parameters": 7250000000.0,
    "layers": 32,
    "hidden_size": 4096,
    "source": "Cloud et al. 2025, Subliminal Learning (arXiv:2507.14805), LoRA SFT of the students",
}

FAMILY = HFFamily(
    "mistral-7b-instruct",
    MODEL_ID,
    REVISION,
    chat_template=CHAT_TEMPLATE,
    default_system_prompt=DEFAULT_SYSTEM_PROMPT,
    steering_layers=STEERING_LAYERS,
    lora_target_modules=LORA_TARGET_MODULES,
    dtype="bfloat16",  # float32 on a CPU (HFFamily.load_dtype)
    recipe=RECIPE,
    description=f"Mistral-7B-Instruct-v0.3 ({MODEL_ID}@{REVISION[:10]}); needs a GPU with >= 24 GB and hub access (gated: accept Mistral's terms).",
)


@hookimpl
def register_families(register):
    register(FAMILY)
