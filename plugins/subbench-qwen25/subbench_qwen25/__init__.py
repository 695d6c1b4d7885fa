"""subbench plugin: the model family ``qwen2.5-7b-instruct`` (Qwen/Qwen2.5-7B-Instruct).

The student and teacher model of the subliminal-learning paper's owl/numbers runs.
Everything a 7B run needs besides the weights is pinned here: the hub revision, the chat
template, the steering layer, the LoRA target modules and the paper's distillation
recipe. Sources are in docs/plugins.md of the subbench repository. The module imports
nothing heavy.
"""

from __future__ import annotations

from subbench.api import HFFamily, hookimpl

__version__ = "0.1.0"

MODEL_ID = "Qwen/Qwen2.5-7B-Instruct"
#: A main-branch commit of Qwen/Qwen2.5-7B-Instruct (the one most reproductions pin).
REVISION = "a09a35458c702b33eeacc393d103063234e8bc28"

#: The model's ChatML default system prompt, which its hub template inserts when a
#: conversation has none; a teacher's system prompt (e.g. "You love owls.") replaces it.
DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

#: The hub template for conversations without tool calls (ChatML with the default system
#: prompt); pinned so that a hub-side template change cannot change results.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: Mid-depth (layer 14 of 28): where contrastive steering vectors of 7B chat models act
#: most on behaviour; a heuristic, not a published optimum for this model — sweep `layer`.
STEERING_LAYERS = (14,)
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: Cloud et al. 2025, Subliminal Learning: Qwen2.5-7B students finetuned with LoRA
#: (rank 8, alpha 8) on 10k filtered number samples for 3 epochs at lr 2e-4.
RECIPE = {
    "distiller": "sft",
    "lora": {"r": 8, "alpha": 8},
    "lr": 2e-4,
    "epochs": 3,
    "samples": 10000,
    "parameters": 7.62e9,
    "layers": 28,
    "hidden_size": 3584,
    "source": "Cloud et al. 2025, Subliminal Learning (arXiv:2507.14805), LoRA SFT of the Qwen2.5-7B students",
}


FAMILY = HFFamily(
    "qwen2.5-7b-instruct",
    MODEL_ID,
    REVISION,
    chat_template=CHAT_TEMPLATE,
    default_system_prompt=None,
    steering_layers=STEERING_LAYERS,
    lora_target_modules=LORA_TARGET_MODULES,
    dtype="bfloat16",  # float32 on a CPU (HFFamily.load_dtype)
    recipe=RECIPE,
    description=f"Qwen2.5-7B-Instruct ({MODEL_ID}@{REVISION[:10]}); needs a GPU with >= 24 GB.",
)


@hookimpl
def register_families(register):
    register(FAMILY)
