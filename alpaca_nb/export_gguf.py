"""Lesson 07: export a LLaMA-architecture model folder to one GGUF file for llama.cpp and Ollama.

What llama.cpp's ``convert_hf_to_gguf.py`` does for ``LlamaForCausalLM``, written with llama.cpp's own Python
library (``gguf``), so that the file is what llama.cpp expects:

- **tensors**: Hugging Face names mapped with ``gguf.get_tensor_name_map`` (``model.layers.3.self_attn.q_proj`` ->
  ``blk.3.attn_q``); the rows of ``q_proj`` and ``k_proj`` permuted back from Hugging Face's rotary layout
  (two halves) to the original LLaMA layout (interleaved pairs), as llama.cpp's ``LlamaModel.permute``; a tied
  ``lm_head`` left out (readers then tie ``output`` to ``token_embd``); 1-D tensors (norms) in float32, the
  matrices in float16 (``f16``) or 8-bit blocks of 32 with one float16 scale each (``q8_0``, ~8.5 bits/weight);
- **hyper-parameters** under ``llama.*`` (context length, sizes, heads, RMSNorm epsilon, rope base);
- **tokenizer**: a byte-level BPE (``tokenizer.json`` as SmolLM2's or GPT-2's: model ``gpt2``, tokens, types,
  merges, and the pre-tokenizer named from ``tokenizer.json``) or LLaMA-7B's SentencePiece BPE (model ``llama``,
  through ``gguf.vocab.LlamaHfVocab``); special token ids, whether BOS/EOS are added (as the source tokenizer
  does), and the model's own chat template (``tokenizer.chat_template``);
- **Alpaca's prompt** as a second, named chat template, ``tokenizer.chat_template.alpaca`` (stanford_alpaca's
  no-input ``PROMPT_DICT`` template for each user turn).

A LoRA adapter folder (lesson 04's ``adapter/``) is merged into its base first (:func:`alpaca_nb.train.merge_lora`).
Next to the file goes an Ollama ``Modelfile`` (:func:`modelfile_text`). The round trip is checked by an independent
reader in :mod:`alpaca_nb.gguf_check`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import AlpacaNbError
from .fileio import atomic_write_text, disk_full_is_one_line, ensure_dir
from .model import check_model_folder, resolve_model
from .modelfile import modelfile_text, prompt_format_of
from .sft import PROMPT_DICT

FORMATS = ("gguf",)
QUANTS = ("f16", "q8_0")
ARCHITECTURES = ("LlamaForCausalLM",)  # LLaMA-7B/13B, SmolLM2, and fine-tunes of them
ALPACA_TEMPLATE_NAME = "alpaca"  # written as tokenizer.chat_template.alpaca
_ROPE_TYPES = ("default", "linear")


def check_export_options(fmt: str, quant: str) -> None:
    """One-line :class:`AlpacaNbError` for an unknown ``--format`` or ``--quant``."""
    if fmt not in FORMATS:
        raise AlpacaNbError(f"unknown --format {fmt!r}; the export writes {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise AlpacaNbError(f"unknown --quant {quant!r}; choose one of {', '.join(QUANTS)} "
                            "(4-bit GGUF: run llama.cpp's llama-quantize on the f16 file)")


def read_llama_config(folder: str | Path) -> dict[str, Any]:
    """``folder/config.json`` if it describes a model this exporter covers; otherwise an error naming the
    architecture (or the setting: biases, rope scaling) it does not cover."""
    path = Path(folder) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AlpacaNbError(f"{path}: cannot read the model's config ({e}); re-save the model") from None
    arch = (cfg.get("architectures") or [cfg.get("model_type") or "unknown"])[0]
    if arch not in ARCHITECTURES or cfg.get("model_type") != "llama":
        raise AlpacaNbError(f"{path}: architecture {arch!r} (model_type {cfg.get('model_type')!r}) is not covered; "
                            f"the GGUF export covers the LLaMA architecture ({', '.join(ARCHITECTURES)}: LLaMA-7B, "
                            "SmolLM2); for others use llama.cpp's convert_hf_to_gguf.py")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise AlpacaNbError(f"{path}: {key}=true is not covered by this LLaMA exporter")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in _ROPE_TYPES:
        raise AlpacaNbError(f"{path}: rope type {rope_type!r} is not covered (only {', '.join(_ROPE_TYPES)})")
    return cfg | {"_rope": rope | {"rope_type": rope_type}, "_path": str(path)}


def alpaca_chat_template() -> str:
    """A Jinja chat template that renders each user message with stanford_alpaca's no-input prompt
    (``PROMPT_DICT["prompt_no_input"]``, which already ends with ``### Response:``)."""
    before, after = PROMPT_DICT["prompt_no_input"].split("{instruction}")
    return ("{% for message in messages %}{% if message['role'] == 'user' %}{{ " + json.dumps(before) +
            " + message['content'] + " + json.dumps(after) + " }}{% elif message['role'] == 'assistant' %}"
            "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}")


def modelfile_path(gguf_path: str | Path) -> Path:
    """Where :func:`export_gguf` writes the Modelfile of ``gguf_path``: ``NAME.Modelfile`` beside ``NAME.gguf``."""
    gguf_path = Path(gguf_path)
    return gguf_path.with_name(gguf_path.stem + ".Modelfile")


def export_gguf(model: str | Path | None, out: str | Path, quant: str = "f16", fmt: str = "gguf",
                prompt_format: str = "auto", force: bool = False) -> dict[str, Any]:
    """Write ``model`` (a LLaMA-architecture folder, a LoRA adapter folder, or ``None``: the embedded model) as
    the GGUF file ``out`` with its Ollama Modelfile beside it; return what was written.

    ``prompt_format`` is the Modelfile's (:mod:`alpaca_nb.modelfile`): ``auto`` picks the one the model was
    trained with. An existing ``out`` or Modelfile (perhaps edited by hand) is never replaced unless ``force``.
    The file appears atomically (written to a hidden temporary file, then renamed): an interrupted export, or a
    full disk (a one-line :class:`AlpacaNbError` saying how much space it needed), leaves an earlier file of the
    same name as it was. Raises :class:`AlpacaNbError` for a missing folder, an architecture or tokenizer this
    exporter does not cover, or an unknown ``fmt``/``quant``/``prompt_format``.
    """
    check_export_options(fmt, quant)
    folder = check_model_folder(resolve_model(model))
    out = Path(out)
    if out.suffix != ".gguf":
        raise AlpacaNbError(f"--out {out}: name the file NAME.gguf")
    existing = [p for p in (out, modelfile_path(out)) if p.exists()]
    if existing and not force:
        raise AlpacaNbError(f"{', '.join(map(str, existing))} already exist(s); the export never replaces them: "
                            "give another --out, or pass --force to overwrite")
    ensure_dir(out.parent, "--out")
    merged, source, tmp = None, folder, out.with_name(f".{out.name}.tmp")
    try:
        if (folder / "adapter_config.json").is_file():  # lesson 04's LoRA adapter: merged into its base first
            from .train import merge_lora

            merged = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.stem}.merged."))
            source = merge_lora(folder, merged / "model")
        from transformers import AutoTokenizer

        cfg = read_llama_config(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        resolved = prompt_format_of(folder, tokenizer.chat_template) if prompt_format == "auto" else prompt_format
        text = modelfile_text(out.name, resolved, tokenizer)  # an unknown format fails before the long write
        with disk_full_is_one_line(out, _estimated_bytes(source, quant)):
            counts = _write_gguf(source, cfg, tmp, quant, name=folder.name)
            os.replace(tmp, out)
            modelfile = atomic_write_text(modelfile_path(out), text)
    finally:
        tmp.unlink(missing_ok=True)
        if merged is not None:
            shutil.rmtree(merged, ignore_errors=True)
    return {"gguf": str(out), "modelfile": str(modelfile), "prompt_format": resolved, "source": str(folder),
            "merged_lora": merged is not None, "quant": quant, "bytes": out.stat().st_size, **counts}


def _estimated_bytes(folder: Path, quant: str) -> int:
    """About how large the GGUF of ``folder``'s weights will be (float32 safetensors: f16 is half, q8_0 ~27%)."""
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors")) or sum(p.stat().st_size
                                                                               for p in folder.glob("*.bin"))
    return int(weights * (0.5 if quant == "f16" else 0.27))


# --- writing ------------------------------------------------------------------------------------------

def _write_gguf(folder: Path, cfg: dict[str, Any], path: Path, quant: str, name: str) -> dict[str, int]:
    import gguf

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA], use_temp_file=True)
    heads, layers = cfg["num_attention_heads"], cfg["num_hidden_layers"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    rope = cfg["_rope"]
    writer.add_name(name)
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(layers)
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    writer.add_rope_freq_base(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_rope_dimension_count(head_dim)
    if head_dim != cfg["hidden_size"] // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _write_vocab(writer, folder, cfg["vocab_size"])

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    n_tensors = n_params = 0
    for hf_name, tensor in _source_tensors(folder):
        if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings")):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise AlpacaNbError(f"{folder}: tensor {hf_name!r} has no GGUF name for the LLaMA architecture")
        data = tensor.float()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        array, qtype = _encode(data.numpy(), quant, hf_name)
        writer.add_tensor(name, array, raw_dtype=qtype)
        n_tensors, n_params = n_tensors + 1, n_params + data.numel()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return {"tensors": n_tensors, "parameters": n_params}


def _permute(weights, n_head: int):
    """Hugging Face's rotary layout of q/k rows (per head: first halves, then second halves) -> the original
    LLaMA layout (interleaved pairs) that llama.cpp's rope expects; transformers' GGUF reader undoes it."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _encode(array, quant: str, hf_name: str):
    """(data, GGML type) of one tensor: 1-D in float32; 2-D in float16, or Q8_0 where rows split into blocks of
    32 (else float16, as llama.cpp does)."""
    import gguf
    import numpy as np

    if array.ndim == 1:
        return array.astype(np.float32), gguf.GGMLQuantizationType.F32
    if quant == "q8_0" and array.shape[-1] % 32 == 0:
        return gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    half = array.astype(np.float16)
    if not np.isfinite(half).all():
        raise AlpacaNbError(f"tensor {hf_name!r} overflows float16 (|w| > 65504); export with --quant q8_0")
    return half, gguf.GGMLQuantizationType.F16


def _source_tensors(folder: Path) -> Iterator[tuple[str, Any]]:
    """Every tensor of the folder's ``*.safetensors`` files, one at a time (a 7B model never sits in memory twice)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise AlpacaNbError(f"{folder}: no *.safetensors weights; re-save the model with save_pretrained()")
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)


# --- the tokenizer ----------------------------------------------------------------------------------------

def _write_vocab(writer, folder: Path, n_vocab: int) -> None:
    """Tokens, their types (and scores), merges, special ids, add-BOS/EOS flags and chat templates."""
    import gguf
    from transformers import AutoTokenizer

    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    model = spec.get("model") or {}
    if model.get("type") == "BPE" and not model.get("byte_fallback") and \
            (spec.get("decoder") or {}).get("type") == "ByteLevel":
        kind, (tokens, types, scores) = "gpt2", _bpe_tokens(folder, n_vocab)
        writer.add_tokenizer_model(kind)
        writer.add_tokenizer_pre(_bpe_pre_tokenizer(spec, path))
    elif (folder / "tokenizer.model").is_file():  # LLaMA-1/2's SentencePiece model, with its merge scores
        try:
            rows = list(gguf.vocab.SentencePieceVocab(folder).all_tokens())
        except RuntimeError as e:  # gguf raises RuntimeError("sentencepiece is not installed")
            raise AlpacaNbError(f"{folder / 'tokenizer.model'}: {e}; pip install sentencepiece") from None
        kind = "llama"
        tokens, scores, types = [r[0].decode("utf-8") for r in rows], [r[1] for r in rows], [r[2] for r in rows]
        writer.add_tokenizer_model(kind)
        writer.add_tokenizer_pre("default")
    else:
        raise AlpacaNbError(f"{folder}: tokenizer not covered (model {model.get('type')!r}); the export covers a "
                            "byte-level BPE tokenizer.json (SmolLM2, GPT-2) and LLaMA's SentencePiece tokenizer.model")
    if len(tokens) > n_vocab:
        raise AlpacaNbError(f"{path}: {len(tokens)} tokens but the model has {n_vocab} embedding rows")
    for i in range(len(tokens), n_vocab):  # embedding rows no token uses (e.g. padded to a multiple of 64)
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
        scores.append(-1000.0)
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    if kind == "llama":  # SentencePiece merges by score
        writer.add_token_scores(scores)
    special = gguf.SpecialVocab(folder, load_merges=kind == "gpt2", n_vocab=n_vocab)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("a")["input_ids"]  # what the source tokenizer really adds, whatever its config says
    special.add_special_token = {"bos": bool(ids) and ids[0] == tok.bos_token_id,
                                 "eos": bool(ids) and ids[-1] == tok.eos_token_id and len(ids) > 1}
    model_template, special.chat_template = special.chat_template, None
    special.add_to_gguf(writer, quiet=True)
    templates = [{"name": ALPACA_TEMPLATE_NAME, "template": alpaca_chat_template()}]
    if isinstance(model_template, str):
        templates.append({"name": "default", "template": model_template})
    writer.add_chat_template(templates)


def _bpe_tokens(folder: Path, n_vocab: int) -> tuple[list[str], list[int], list[float]]:
    """Byte-level BPE tokens by id with llama.cpp's types: added special tokens CONTROL, other added tokens
    USER_DEFINED, the rest NORMAL (as ``convert_hf_to_gguf.py``'s ``get_vocab_base``)."""
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    reverse = {i: t for t, i in tok.get_vocab().items()}
    if max(reverse) >= n_vocab:
        raise AlpacaNbError(f"{folder}: token id {max(reverse)} but the model has only {n_vocab} embedding rows")
    added, decoder = tok.get_added_vocab(), tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(max(reverse) + 1):
        token = reverse.get(i)
        tokens.append(token if token is not None else f"[PAD{i}]")
        if token is None:
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            types.append(gguf.TokenType.CONTROL if decoder[i].special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, types, [0.0] * len(tokens)


def _bpe_pre_tokenizer(spec: dict[str, Any], path: Path) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for how ``tokenizer.json`` splits text before BPE: ``gpt-2``
    (byte-level with GPT-2's regex), ``smollm`` (digits split first, as the embedded folder and the Hub's
    SmolLM2) or ``llama-bpe`` (Llama 3's split regex); anything else is an error naming it."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in json.dumps(steps[0]):
        return "llama-bpe"
    raise AlpacaNbError(f"{path}: pre-tokenizer {kinds} is not one this export can name for llama.cpp "
                        "(gpt-2, smollm, llama-bpe); use llama.cpp's convert_hf_to_gguf.py")
