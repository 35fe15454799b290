"""GGUF export (lesson 07): the real CLI writes the file and its Modelfile; transformers, an independent reader,
loads it back with the same tokens, logits within tolerance and (f16) the same greedy answers."""
from __future__ import annotations

import json

import pytest

from alpaca_nb import answers, export_gguf, gguf_check
from alpaca_nb.cli import main
from alpaca_nb.sft import format_prompt


@pytest.fixture(scope="module")
def source_lm(model_dir):
    return answers.load_local_model(model_dir)


@pytest.fixture(scope="module")
def f16_export(model_dir, tmp_path_factory):
    """The embedded model exported once through the real CLI: (gguf path, printed result)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("export") / "smol-f16.gguf"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", "--model", str(model_dir), "--format", "gguf", "--quant", "f16", "--out", str(out)]) == 0
    return out, json.loads(printed.getvalue())


def test_f16_round_trip_same_tokens_logits_and_greedy_answers(f16_export, source_lm):
    path, result = f16_export
    assert result["tensors"] == 272 and result["quant"] == "f16" and not result["merged_lora"]
    check = gguf_check.verify_gguf(source_lm, path, n_prompts=8, max_new_tokens=16)
    assert check["quant"] == "f16" and check["same_token_ids"]
    assert check["max_abs_logit_diff"] <= gguf_check.TOLERANCES["f16"], check
    assert check["greedy_identical"] == check["greedy_compared"] == 8, check
    assert check["passed"]


def test_q8_0_logits_within_its_tolerance(model_dir, source_lm, f16_export, tmp_path):
    result = export_gguf.export_gguf(model_dir, tmp_path / "smol-q8_0.gguf", quant="q8_0")
    assert gguf_check.gguf_quant(result["gguf"]) == "q8_0"
    assert result["bytes"] < 0.6 * f16_export[1]["bytes"]  # 8.5 bits per weight vs 16
    lm = gguf_check.load_gguf_model(result["gguf"])
    cmp = gguf_check.compare_logits(source_lm, lm, [format_prompt(i) for i in gguf_check.VERIFY_INSTRUCTIONS[:2]])
    assert cmp["same_token_ids"]
    assert 0 < cmp["max_abs_logit_diff"] <= gguf_check.TOLERANCES["q8_0"], cmp
    assert cmp["top1_agreement"] >= gguf_check.MIN_TOP1_AGREEMENT


def test_the_embedded_chat_model_gets_its_own_chatml_modelfile(f16_export, model_dir):
    from transformers import AutoTokenizer

    path, result = f16_export
    text = (path.parent / "smol-f16.Modelfile").read_text()
    assert result["modelfile"] == str(path.parent / "smol-f16.Modelfile") and result["prompt_format"] == "chatml"
    assert "FROM ./smol-f16.gguf\n" in text and "{{ .System }}" in text
    assert 'PARAMETER stop "<|im_end|>"\n' in text and "### Instruction" not in text
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for system in (None, "Answer in French."):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Hi"}]
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert _ollama_render(text, "Hi", system) == expected  # the default SYSTEM is the template's own


@pytest.mark.parametrize("template", ["stanford", "alpaca-lora"])
def test_a_lesson_04_fine_tune_gets_the_alpaca_template_it_was_trained_with(tmp_path, template):
    from alpaca_nb.modelfile import modelfile_text, prompt_format_of

    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "resolved_config.json").write_text(json.dumps({"template": template}))
    fmt = prompt_format_of(tmp_path / "run" / "model", "<|im_start|>{{ messages }}")
    assert fmt == template
    text = modelfile_text("m.gguf", fmt)
    assert _ollama_render(text, "Name a color.") == format_prompt("Name a color.", template=template)
    assert 'PARAMETER stop "### Instruction:"\n' in text
    assert "PARAMETER temperature 0.1\n" in text and "PARAMETER top_p 0.75\n" in text
    assert _ollama_render(text, "Name a color.", "Be brief.").startswith("Be brief.\n\n### Instruction:\n")


def test_export_never_replaces_a_file_or_a_hand_edited_modelfile_unless_forced(f16_export, model_dir, capsys):
    path, _ = f16_export
    modelfile = path.parent / "smol-f16.Modelfile"
    modelfile.write_text(modelfile.read_text() + "# my edit\n")
    before = path.stat().st_mtime_ns
    line = _cli_error(capsys, "--model", str(model_dir), "--out", str(path))
    assert str(path) in line and "--force" in line
    assert path.stat().st_mtime_ns == before and modelfile.read_text().endswith("# my edit\n")


def _ollama_render(modelfile: str, prompt: str, system: str | None = None) -> str:
    """What Ollama sends the model for one ``prompt`` under ``modelfile``'s ``TEMPLATE`` (up to ``{{ .Response }}``),
    with ``system`` or the Modelfile's ``SYSTEM``. Covers the ``{{ if .X }}...{{ end }}`` and ``{{ .X }}`` forms the
    templates above use (Ollama's Go templates do more); for checking them against the training prompt."""
    import re

    def block(key: str) -> str:
        m = re.search(key + r' """(.*?)"""', modelfile, re.S)
        return m.group(1) if m else ""

    values = {"System": block("SYSTEM") if system is None else system, "Prompt": prompt, "Response": ""}
    text = block("TEMPLATE").split("{{ .Response }}")[0]
    text = re.sub(r"\{\{ if \.(\w+) \}\}(.*?)\{\{ end \}\}", lambda m: m.group(2) if values[m.group(1)] else "",
                  text, flags=re.S)
    return re.sub(r"\{\{ \.(\w+) \}\}", lambda m: values[m.group(1)], text)


def test_gguf_carries_the_alpaca_template_and_the_models_own(f16_export, model_dir):
    import gguf
    import jinja2

    fields = gguf.GGUFReader(str(f16_export[0])).fields
    alpaca = fields["tokenizer.chat_template.alpaca"].contents()
    rendered = jinja2.Template(alpaca).render(messages=[{"role": "user", "content": "Name a color."}])
    assert rendered == format_prompt("Name a color.")
    answered = jinja2.Template(alpaca).render(messages=[{"role": "user", "content": "Name a color."},
                                                        {"role": "assistant", "content": "Blue."}])
    assert answered == format_prompt("Name a color.") + "Blue.\n\n"  # as stanford_alpaca's source + target
    assert fields["tokenizer.chat_template"].contents() == (model_dir / "chat_template.jinja").read_text()
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"  # as the source GGUF: digits split, then GPT-2 regex


def _cli_error(capsys, *argv: str) -> str:
    assert main(["export", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alpaca-nb export: error: "), captured.err
    return lines[0]


def test_bad_input_is_one_clear_line(tmp_path, capsys, model_dir):
    out = tmp_path / "x.gguf"
    line = _cli_error(capsys, "--model", str(tmp_path / "nowhere"), "--out", str(out))
    assert f"model folder {tmp_path / 'nowhere'} does not exist" in line

    gpt2 = tmp_path / "tiny-gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                                                  "n_layer": 2, "n_embd": 8, "n_head": 2}))
    line = _cli_error(capsys, "--model", str(gpt2), "--out", str(out))
    assert "architecture 'GPT2LMHeadModel' (model_type 'gpt2') is not covered" in line and "LLaMA" in line

    line = _cli_error(capsys, "--model", str(model_dir), "--quant", "q4_k", "--out", str(out))
    assert "unknown --quant 'q4_k'; choose one of f16, q8_0" in line
    line = _cli_error(capsys, "--model", str(model_dir), "--format", "safetensors", "--out", str(out))
    assert "unknown --format 'safetensors'" in line
    assert list(tmp_path.glob("*.gguf")) == [] and list(tmp_path.glob(".*")) == []  # nothing half-written


def test_lora_adapter_is_merged_before_export(model_dir, tmp_path):
    """An adapter folder exports as base + adapter: the file's weights are the merged ones, read back from the GGUF."""
    import gguf
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = base.model.layers[0].self_attn.v_proj.weight.detach().clone()
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp_path / "adapter")
    merged = lora.merge_and_unload().model.layers[0].self_attn.v_proj.weight.detach()

    result = export_gguf.export_gguf(tmp_path / "adapter", tmp_path / "a.gguf", quant="q8_0")
    assert result["merged_lora"] and result["tensors"] == 272
    tensor = next(t for t in gguf.GGUFReader(result["gguf"]).tensors if t.name == "blk.0.attn_v.weight")
    got = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type)).reshape(merged.shape)
    error = float((got - merged).abs().max())
    assert error < 0.01 * float(merged.abs().max())  # Q8_0 rounding only
    assert float((merged - before).abs().max()) > 10 * error  # and the adapter did change the weight
    assert not list(tmp_path.glob(".a.*"))  # the temporary merged folder is gone
