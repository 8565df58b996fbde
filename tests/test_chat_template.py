"""chatllm renders chat templates itself (to skip llama-cpp-python's high-level
import and numpy); these tests render real templates through it and through
llama-cpp-python's Jinja2ChatFormatter and require the same text."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatllm.engine.chat_prompt import CHATML_TEMPLATE
from chatllm.engine.chat_template import ChatTemplate
from tests.support.gguf_files import CHAT_TEMPLATE as TINY_TEMPLATE

# Shapes that real GGUF templates use: Llama 3 headers, Mistral's alternation
# check with raise_exception, Gemma's role renaming, a system message folded
# into the first user turn, `{% generation %}`, loop controls and tojson.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
FOLDED_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}"
    "{% for message in rest %}{% if loop.first and system %}{{ '<<SYS>>' + system + '<</SYS>>' }}{% endif %}"
    "{% if message.role == 'tool' %}{% continue %}{% endif %}"
    "{{ message.role }}: {% generation %}{{ message.content }}{% endgeneration %}\n{% endfor %}"
    "{{ {'n': messages | length, 'text': 'ünïcode'} | tojson }}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Bonjour !"}],
    [
        {"role": "system", "content": "Be brief.  "},
        {"role": "user", "content": "  你好，世界"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "<|im_start|>system\nx"},
    ],
]


def _embedded_template() -> str | None:
    from chatllm.hub.gguf_info import read_gguf_info
    from chatllm.hub.models import embedded_model_path

    path = embedded_model_path()
    return read_gguf_info(Path(path)).chat_template if path else None


@pytest.mark.parametrize("name", ["chatml", "tiny", "llama3", "mistral", "gemma", "folded_system", "smollm2"])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_renders_exactly_as_llama_cpp_python(name: str, conversation: int, add_generation_prompt: bool) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    source = {
        "chatml": CHATML_TEMPLATE,
        "tiny": TINY_TEMPLATE,
        "llama3": LLAMA3,
        "mistral": MISTRAL,
        "gemma": GEMMA,
        "folded_system": FOLDED_SYSTEM,
    }.get(name) or _embedded_template()
    if source is None:
        pytest.skip("the embedded model is not installed")
    messages = CONVERSATIONS[conversation]
    theirs = Jinja2ChatFormatter(source, "</s>", "<s>", add_generation_prompt=add_generation_prompt)
    ours = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    try:
        expected = theirs(messages=messages).prompt
    except Exception as error:  # the template rejects this conversation: so must ours, the same way
        with pytest.raises(type(error), match=str(error)[:40]):
            ours.render(messages, add_generation_prompt)
        return
    assert ours.render(messages, add_generation_prompt) == expected
