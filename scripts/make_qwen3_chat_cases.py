#!/usr/bin/env python3
"""Writes tests/fixtures/model_io/qwen3-chat_cases.json: what transformers renders with Qwen3's chat
template (tests/fixtures/model_io/qwen3-chat_template.jinja, the `chat_template` of
Qwen/Qwen3-0.6B's tokenizer_config.json: thinking blocks, `enable_thinking`, tool calls and tool
responses) for conversations that take each of its branches. tests/model_io.rs renders the same
with clipo's template engine and compares byte for byte.

Run by hand, in the virtualenv of scripts/make_parity_fixtures.py (transformers is all it needs):

    /work/venv-torch/bin/python scripts/make_qwen3_chat_cases.py   # from the repo root

(Made 2026-12 with transformers 5.25.0, whose `render_jinja_template` is what
`apply_chat_template(..., tokenize=False)` calls: the same Jinja2 sandbox, `tojson`, and the
aliasing of `reasoning` / `thinking` to `reasoning_content`.)

Tool schemas and arguments have their keys in sorted order: clipo's maps iterate sorted, so
`tojson` of an unsorted object would differ (a departure documented in lib/model/chat.rs).
"""
import json
import os

import jinja2
import transformers
from transformers.utils.chat_template_utils import render_jinja_template

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "model_io")

WEATHER = {"function": {"description": "Get the weather in a city.", "name": "get_weather",
                        "parameters": {"properties": {"city": {"description": "The city.", "type": "string"}},
                                       "required": ["city"], "type": "object"}},
           "type": "function"}

CASES = [
    # (messages, add_generation_prompt, tools, extra template variables)
    ([{"role": "user", "content": "What is 2 + 3?"}], True, None, {}),
    ([{"role": "user", "content": "What is 2 + 3?"}], True, None, {"enable_thinking": False}),
    ([{"role": "user", "content": "What is 2 + 3?"}], True, None, {"enable_thinking": True}),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], True, None, {}),
    # an earlier turn's thinking is dropped, the last one's kept
    ([{"role": "user", "content": "2 + 3?"},
      {"role": "assistant", "content": "<think>\nTwo plus three.\n</think>\n\nIt is 5."},
      {"role": "user", "content": "Times 4?"},
      {"role": "assistant", "content": "<think>\n5 x 4\n</think>\n\n20"}], False, None, {}),
    ([{"role": "user", "content": "2 + 3?"},
      {"role": "assistant", "content": "<think>\nTwo plus three.\n</think>\n\nIt is 5."},
      {"role": "user", "content": "Times 4?"}], True, None, {"enable_thinking": False}),
    # reasoning given as a field (and under transformers' older names)
    ([{"role": "user", "content": "Why?"},
      {"role": "assistant", "content": "\nBecause.", "reasoning_content": "\nthink hard\n"}], False, None, {}),
    ([{"role": "user", "content": "Why?"},
      {"role": "assistant", "content": "Because.", "reasoning": "thought"}], False, None, {}),
    # tools: the system block, tool calls (object and string arguments), grouped tool responses
    ([{"role": "system", "content": "You check the weather."},
      {"role": "user", "content": "Weather in Paris and Oslo?"},
      {"role": "assistant", "content": "",
       "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                      {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
      {"role": "tool", "content": "{\"temp\": 21}"},
      {"role": "tool", "content": "{\"temp\": 12}"},
      {"role": "assistant", "content": "<think>\nCompare.\n</think>\n\nParis is warmer."}], False, [WEATHER], {}),
    ([{"role": "user", "content": "Weather in Rome?"},
      {"role": "assistant", "content": "Let me check.",
       "tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]},
      {"role": "tool", "content": "sunny"}], True, [WEATHER], {}),
    # a user message that is a tool response does not count as the last query
    ([{"role": "user", "content": "Go."},
      {"role": "assistant", "content": "<think>\nplan\n</think>\n\nstep 1"},
      {"role": "user", "content": "<tool_response>\nok\n</tool_response>"},
      {"role": "assistant", "content": "<think>\nnext\n</think>\n\nstep 2"}], False, None, {}),
    ([], True, None, {}),
]


def main():
    template = open(os.path.join(OUT, "qwen3-chat_template.jinja")).read()
    special = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    cases = []
    for messages, gen, tools, extra in CASES:
        try:  # rendered: null where transformers fails
            rendered = render_jinja_template([messages], tools=tools, chat_template=template,
                                             add_generation_prompt=gen, **special, **extra)[0][0]
        except jinja2.exceptions.UndefinedError:
            rendered = None
        cases.append({"messages": messages, "add_generation_prompt": gen, "tools": tools, "vars": extra,
                      "rendered": rendered})
    out = {"transformers": transformers.__version__, "special_tokens": special, "cases": cases}
    path = os.path.join(OUT, "qwen3-chat_cases.json")
    json.dump(out, open(path, "w"), indent=1, ensure_ascii=False)
    print(path, len(cases), "cases,", sum(c["rendered"] is None for c in cases), "failing in transformers")


if __name__ == "__main__":
    main()
