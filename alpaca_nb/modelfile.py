"""Lesson 07: the Ollama ``Modelfile`` beside an exported GGUF, with the prompt format the model was trained on.

A model answers well only in the format it was trained with. Lesson 04's fine-tunes learned Alpaca's prompt
(stanford_alpaca's ``PROMPT_DICT``, or alpaca-lora's ``templates/alpaca.json``); the embedded SmolLM2-Instruct
learned ChatML (``<|im_start|>role ... <|im_end|>``, its ``chat_template.jinja``). :func:`prompt_format_of` tells
which from the folder, and :func:`modelfile_text` writes Ollama's ``TEMPLATE`` for it, with the instruction's
preamble (Alpaca's "Below is an instruction...", or the chat model's default system prompt) as ``SYSTEM``, so
``{{ .System }}`` can be replaced per request as Ollama's own templates allow.
"""
from __future__ import annotations

from pathlib import Path

from .errors import AlpacaNbError
from .fileio import read_json
from .sft import TEMPLATES

FORMATS = ("auto", "stanford", "alpaca-lora", "chatml")
TRAIN_CONFIG = "resolved_config.json"  # alpaca_nb.train.CONFIG_FILE: what lesson 04 trained a folder with
# The decoding of stanford_alpaca's own inference.py (GenerationConfig(temperature=0.1, top_p=0.75, num_beams=4),
# max_new_tokens = model_max_length = 512). Ollama has no beam search: num_beams=4 has no equivalent.
OLLAMA_PARAMETERS = {"temperature": 0.1, "top_p": 0.75, "num_predict": 512}
ALPACA_STOP = "### Instruction:"
CHATML_STOPS = ("<|im_start|>", "<|im_end|>")


def prompt_format_of(folder: str | Path, chat_template: str | None) -> str:
    """``"stanford"`` or ``"alpaca-lora"`` for a folder lesson 04 trained (its run's ``resolved_config.json`` in the
    folder or beside it names the template), ``"chatml"`` for a chat model whose template uses ``<|im_start|>``
    (the embedded SmolLM2-Instruct), else ``"stanford"``."""
    folder = Path(folder)
    for config in (folder / TRAIN_CONFIG, folder.parent / TRAIN_CONFIG):
        if config.is_file():
            template = read_json(config).get("template", "stanford")
            return template if template in TEMPLATES else "stanford"
    return "chatml" if chat_template and "<|im_start|>" in chat_template else "stanford"


def _chatml_default_system(tokenizer) -> str:
    """The system prompt the model's chat template adds when none is given (SmolLM2: "You are a helpful AI
    assistant named SmolLM, trained by Hugging Face"), or ``""``."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    head = "<|im_start|>system\n"
    return text[len(head):text.index("<|im_end|>")] if text.startswith(head) else ""


def modelfile_text(gguf_name: str, prompt_format: str = "stanford", tokenizer=None) -> str:
    """An Ollama ``Modelfile`` for the GGUF ``gguf_name`` (in the same folder) in ``prompt_format``.

    ``stanford`` / ``alpaca-lora``: Alpaca's no-input prompt, its first paragraph as ``SYSTEM`` and the rest as
    ``TEMPLATE`` (rendered with the default ``SYSTEM`` it is the training prompt, character for character), a stop
    at ``### Instruction:``. ``chatml``: Ollama's ChatML template (system, user, assistant turns), the chat model's
    default system prompt (read from ``tokenizer``'s template) and stops at its turn markers. Both carry
    stanford_alpaca's ``inference.py`` sampling (:data:`OLLAMA_PARAMETERS`).
    """
    name = gguf_name.rsplit(".", 1)[0]
    lines = [f"# Ollama: ollama create {name} -f {name}.Modelfile && ollama run {name}", f"FROM ./{gguf_name}",
             f"# prompt format: {prompt_format} (the one this model was trained with)"]
    if prompt_format in TEMPLATES:
        before, after = TEMPLATES[prompt_format]["prompt_no_input"].split("{instruction}")
        system, rest = before.split("\n\n", 1)
        template = "{{ if .System }}{{ .System }}\n\n{{ end }}" + rest + "{{ .Prompt }}" + after
        lines += [f'SYSTEM """{system}"""', f'TEMPLATE """{template}"""', f'PARAMETER stop "{ALPACA_STOP}"']
    elif prompt_format == "chatml":
        if tokenizer is None:
            raise AlpacaNbError("the chatml Modelfile needs the model's tokenizer for its default system prompt")
        system = _chatml_default_system(tokenizer)
        template = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
                    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
                    "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n")
        lines += ([f'SYSTEM """{system}"""'] if system else []) + [f'TEMPLATE """{template}"""']
        lines += [f'PARAMETER stop "{stop}"' for stop in CHATML_STOPS]
    else:
        raise AlpacaNbError(f"unknown prompt format {prompt_format!r}; choose one of {', '.join(FORMATS)}")
    lines += [f"PARAMETER {k} {v}" for k, v in OLLAMA_PARAMETERS.items()]
    return "\n".join(lines) + "\n"

