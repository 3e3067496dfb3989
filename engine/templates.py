"""Named chat templates for base models that ship none (standard library only).

Each marks what the assistant says with `{% generation %}` so that trl can put the loss on the
answers alone. Special tokens come from the tokenizer (`bos_token`, `eos_token`) where the
format uses them; Llama-3's header tokens are literal, as in Meta's template.
"""

from __future__ import annotations

TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}"
        "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set sys = '<<SYS>>\n' + messages[0]['content'] + '\n<</SYS>>\n\n' %}"
        "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "{% for message in msgs %}"
        "{% if message['role'] == 'user' %}"
        "{{ (bos_token or '') + '[INST] ' + (sys if loop.first else '') + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{% generation %}{{ ' ' + message['content'] + ' ' + (eos_token or '') }}{% endgeneration %}"
        "{% endif %}{% endfor %}"
    ),
    "llama3": (
        "{{ '<|begin_of_text|>' }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
        "{% if message['role'] == 'assistant' %}"
        "{% generation %}{{ message['content'] + '<|eot_id|>' }}{% endgeneration %}"
        "{% else %}{{ message['content'] + '<|eot_id|>' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "mistral": (
        "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] + '\n\n' %}"
        "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "{{ bos_token or '' }}"
        "{% for message in msgs %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + (sys if loop.first else '') + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{% generation %}{{ message['content'] + (eos_token or '') }}{% endgeneration %}"
        "{% endif %}{% endfor %}"
    ),
    "alpaca": (
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}"
        "{% set msgs = messages[1:] %}{% else %}"
        "{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' }}"
        "{% set msgs = messages %}{% endif %}"
        "{% for message in msgs %}"
        "{% if message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n### Response:\n' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{% generation %}{{ message['content'] + (eos_token or '') }}{% endgeneration %}{{ '\n\n' }}"
        "{% endif %}{% endfor %}"
    ),
}

# what ends an answer in each format, so generation stops there
STOP_STRINGS: dict[str, list[str]] = {
    "chatml": ["<|im_end|>"], "llama3": ["<|eot_id|>"], "llama2": [], "mistral": [], "alpaca": ["### Instruction:"],
}


def plain_text(messages: list[dict]) -> str:
    """A conversation as a pretraining run reads it: the contents, blank-line separated, no system prompt."""
    return "\n\n".join(m["content"] for m in messages if m["role"] != "system")
