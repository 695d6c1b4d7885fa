"""subbench plugin: the model family ``llama-3.1-8b-instruct`` (meta-llama/Llama-3.1-8B-Instruct).

Everything a run needs besides the weights is pinned here: the hub revision, the chat
template (a later template change on the hub cannot change results), the steering layer,
the LoRA target modules and the distillation recipe. The module imports nothing heavy.
"""

from __future__ import annotations

from subbench.api import HFFamily, hookimpl

__version__ = "0.1.0"

MODEL_ID = "meta-llama/Llama-3.1-8B-Instruct"
#: main of meta-llama/Llama-3.1-8B-Instruct as cached by most published 3.1 work (the snapshot hash of `huggingface-cli download` since 2024-09).
REVISION = "0e9e39f249a16976918f6564b8830bc894c89659"

#: the hub template without tools: a system header that always carries the knowledge-cutoff and date lines the hub template writes, then header-delimited turns ending in <|eot_id|>.
CHAT_TEMPLATE = (
    '{{ bos_token }}'
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system_message = messages[0]['content'] | trim %}"
    '{% set loop_messages = messages[1:] %}'
    '{% else %}'
    "{% set system_message = '' %}"
    '{% set loop_messages = messages %}'
    '{% endif %}'
    "{{ '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{ 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    '{{ system_message }}'
    "{{ '<|eot_id|>' }}"
    '{% for message in loop_messages %}'
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    '{% endfor %}'
    '{% if add_generation_prompt %}'
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    '{% endif %}'
)
DEFAULT_SYSTEM_PROMPT = None

#: mid-depth of 32 layers, where contrastive activation addition works on 32-layer Llama models (Rimsky et al. 2024 found 13 on Llama-2-7B); sweep it with steering-sweep before a paper run.
STEERING_LAYERS = (16,)
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: The subliminal-learning recipe (Cloud et al. 2025), applied unchanged to Llama.
RECIPE = {
    "distiller": "sft",
    "lora": {"r": 8, "alpha": 8},
    "lr": 2e-4,
    "epochs": 3,
    "samples": 10000,
    "parameters": 8030000000.0,
    "layers": 32,
    "hidden_size": 4096,
    "source": "Cloud et al. 2025, Subliminal Learning (arXiv:2507.14805), LoRA SFT of the students",
}

FAMILY = HFFamily(
    "llama-3.1-8b-instruct",
    MODEL_ID,
    REVISION,
    chat_template=CHAT_TEMPLATE,
    default_system_prompt=DEFAULT_SYSTEM_PROMPT,
    steering_layers=STEERING_LAYERS,
    lora_target_modules=LORA_TARGET_MODULES,
    dtype="bfloat16",  # float32 on a CPU (HFFamily.load_dtype)
    recipe=RECIPE,
    description=f"Llama-3.1-8B-Instruct ({MODEL_ID}@{REVISION[:10]}); needs a GPU with >= 24 GB and hub access (gated: accept Meta's licence).",
)


@hookimpl
def register_families(register):
    register(FAMILY)
