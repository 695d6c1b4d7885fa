"""subbench plugin: the model family ``llama-2-7b-chat`` (meta-llama/Llama-2-7b-chat-hf).

Everything a 7B run needs besides the weights is pinned here: the hub revision, the
chat template (so a later template change on the hub cannot change results), the
steering layer, the LoRA target modules and the distillation recipe. Sources are in
docs/plugins.md of the subbench repository. The module imports nothing heavy.
"""

from __future__ import annotations

from subbench.api import HFFamily, hookimpl

__version__ = "0.1.0"

MODEL_ID = "meta-llama/Llama-2-7b-chat-hf"
#: main of meta-llama/Llama-2-7b-chat-hf (the revision cited by vLLM's tests and most papers since 2024).
REVISION = "f5db02db724555f92da89c216ac04704f23d4590"

#: The hub tokenizer's template: [INST] turns, the system prompt folded into the first user
#: turn between <<SYS>> markers, and no default system prompt (Meta's old default is not
#: applied by the hub template either).
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
DEFAULT_SYSTEM_PROMPT = None

#: Contrastive activation addition on Llama-2-7B-chat works best around layer 13 of 32
#: (Rimsky et al. 2024, "Steering Llama 2 via Contrastive Activation Addition").
STEERING_LAYERS = (13,)
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: The subliminal-learning recipe (Cloud et al. 2025), applied unchanged to Llama-2.
RECIPE = {
    "distiller": "sft",
    "lora": {"r": 8, "alpha": 8},
    "lr": 2e-4,
    "epochs": 3,
    "samples": 10000,
    "parameters": 6.74e9,
    "layers": 32,
    "hidden_size": 4096,
    "source": "Cloud et al. 2025, Subliminal Learning (arXiv:2507.14805), LoRA SFT of the 7B students",
}


FAMILY = HFFamily(
    "llama-2-7b-chat",
    MODEL_ID,
    REVISION,
    chat_template=CHAT_TEMPLATE,
    default_system_prompt=DEFAULT_SYSTEM_PROMPT,
    steering_layers=STEERING_LAYERS,
    lora_target_modules=LORA_TARGET_MODULES,
    dtype="bfloat16",  # float32 on a CPU (HFFamily.load_dtype)
    recipe=RECIPE,
    description=f"Llama-2-7B-chat ({MODEL_ID}@{REVISION[:10]}); needs a GPU with >= 24 GB and hub access.",
)


@hookimpl
def register_families(register):
    register(FAMILY)
