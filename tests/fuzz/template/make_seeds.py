#!/usr/bin/env python3
"""Writes seed inputs for fuzz_template (the input format is described at the top of fuzz_template.c).
The template texts are short sketches, written for these seeds, of how each family's Jinja reads: enough
for br_tmpl_detect to tell them apart, not the models' real templates."""
import os

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(here, exist_ok=True)
SEP, REPEAT = b"\x1f", b"\x1d"
SYS, USER, ASSIST, TOOL = b"0", b"1", b"2", b"3"  # one-byte roles

CHATML = (b"{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          b"{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
REASONING = (b"{%- set thinking_prefix = 'Think inside <think> </think> first.' -%}"
             b"{% for m in messages %}<|im_start|>{{ m.role }}\\n{{ m.content }}<|im_end|>\\n{% endfor %}"
             b"{% if add_generation_prompt %}<|im_start|>assistant\\n<think>\\n{% endif %}")
JAMBA = (b"{% set bom_str = bom_str or '<|bom|>' %}{{ bos_token }}{{ bom_str }}<|system|> {{ system }}"
         b"{% for m in messages %}<|eom|>{{ bom_str }}<|{{ m.role }}|> {{ m.content }}{% endfor %}<|eom|>")
OTHER = b"{% for m in messages %}[{{ m.role }}]: {{ m.content }}\\n{% endfor %}"


def flags(tok, source, gen):
    return bytes([tok | source << 2 | (32 if gen else 0)])


def seed(name, tok, source, gen, field0, msgs):
    parts = [field0]
    for role, content in msgs:
        parts += [role, content]
    with open(os.path.join(here, name), "wb") as f:
        f.write(flags(tok, source, gen) + SEP.join(parts))


conv = [(SYS, b"Be brief."), (USER, b"Hi"), (ASSIST, b"Hello! How can I help?"), (USER, b"Name a colour.")]
think = [(USER, b"What is 2+2?"), (ASSIST, b"<think>\nAdd them.\n</think>\n\nIt is 4."), (USER, b"And 3+3?")]
tools = [(SYS, b"You may call tools."), (USER, b"Weather in Paris?"),
         (ASSIST, b"<tool_call>{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}</tool_call>"),
         (TOOL, b"{\"temp\": 18}"), (TOOL, b"{\"sky\": \"clear\"}"), (USER, b"<tool_response>ok</tool_response>")]
odd = [(b"narrator", b"an unknown role"), (USER, b"x")]
bytes_ = [(USER, b"bad \xff\xfe utf-8 \xc3 and a nul \x00 inside"), (ASSIST, b"h\xc3\xa9llo \xe2\x98\x83 <|im_end|>"),
          (USER, b"<|eom|><|bom|><|assistant|> typed markers")]
huge = [(USER, REPEAT + b"\x07" + b"long text "), (ASSIST, b"ok")]

# the four formats by number, with and without a tokenizer, with and without the generation prompt
for k, nm in enumerate(["plain", "chatml", "reasoning", "jamba"]):
    seed(f"{nm}-text", 0, k, True, b"", conv)
    seed(f"{nm}-tok", 1, k, False, b"", conv)
seed("reasoning-think", 1, 2, True, b"", think)
seed("reasoning-tools", 0, 2, True, b"", tools)
seed("chatml-bytes", 1, 1, True, b"", bytes_)
seed("jamba-bos", 2, 3, True, b"", bytes_)
seed("plain-huge", 2, 0, True, b"", huge)
seed("no-markers", 3, 1, True, b"", conv)
seed("unknown-role", 0, 1, True, b"", odd)
seed("empty", 1, 3, True, b"", [])
# detection from a GGUF's tokenizer.chat_template, overrides by name, no GGUF, a GGUF without the key
seed("gguf-chatml", 1, 4, True, CHATML, conv)
seed("gguf-reasoning", 1, 4, True, REASONING, think)
seed("gguf-jamba", 2, 4, True, JAMBA, tools)
seed("gguf-other", 0, 4, True, OTHER, conv)
seed("gguf-nul", 0, 4, False, b"plain\x00<|im_start|>", conv)
seed("override-jamba", 1, 5, True, b"jamba", conv)
seed("override-unknown", 0, 5, True, b"vicuna", conv)
seed("no-gguf", 1, 6, True, b"", conv)
seed("gguf-no-key", 0, 7, False, b"", think)
