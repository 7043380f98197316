"""The built-in model's special tokens and ChatML chat template.

The template is rendered here with the same Jinja settings transformers uses (``trim_blocks``,
``lstrip_blocks``, a sandbox and a ``raise_exception`` global), so text rendered by this module and by
``AutoTokenizer.apply_chat_template`` is byte-identical. Training data, evaluation and the shipped
``tokenizer_config.json`` all take the template from here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

END_OF_TEXT = "<|endoftext|>"
"""Separates documents in the training stream; also the tokenizer's bos and pad token."""
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
"""Ends every turn; the engine stops generating on it (the eos token)."""
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)
"""In this order they get ids 0, 1, 2 in the trained tokenizer."""

# Content may be a string or a list of OpenAI-style parts ({"type": "text", "text": ...}); only text
# parts are kept. A system message is allowed only as the first message.
CHAT_TEMPLATE = (
    "{%- for message in messages %}\n"
    "{%- if message['role'] not in ('system', 'user', 'assistant') %}"
    "{{- raise_exception('unknown role: ' + message['role']) }}{%- endif %}\n"
    "{%- if message['role'] == 'system' and not loop.first %}"
    "{{- raise_exception('a system message must come first') }}{%- endif %}\n"
    "{%- if message['content'] is string %}{%- set content = message['content'] %}\n"
    "{%- elif message['content'] is none %}{%- set content = '' %}\n"
    "{%- else %}{%- set content = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('') %}{%- endif %}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n"
)


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(template)


def render_chat(messages: list[dict[str, Any]], add_generation_prompt: bool = False,
                template: str = CHAT_TEMPLATE, **context: Any) -> str:
    """Render ``messages`` with a Jinja chat template, as transformers would.

    Examples
    --------
    >>> render_chat([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     **context)
