"""A pruned Llama-family decoder as a GGUF file that llama.cpp runs (architecture ``deci``).

Stock Llama GGUF files hold one head count and one FFN width for every layer; llama.cpp's ``deci``
builder (written for the NAS-derived Nemotron models) reads them per layer: ``head_count``,
``head_count_kv`` and ``feed_forward_length`` are arrays of one entry per block, and a block with 0
heads has no attention. The shapes llama.cpp's loader and graph accept decide how a pruned layer is
written (checked against llama.cpp's ``src/models/deci.cpp``, vendored by llama-cpp-python 0.3.36):

- a layer with no heads and no neurons is the identity: it is left out (the blocks are renumbered);
- no heads (and some neurons): ``head_count = head_count_kv = 0``, no attention tensors; but block
  0 keeps one head with a zero output projection, because llama.cpp takes the head size from block
  0's head count;
- heads but no neurons: llama.cpp's graph drops the attention output of a block whose FFN width is
  0, so such a block gets an FFN one neuron wide whose weights are zero (its output is exactly 0);
- tied embeddings stay tied (no ``output.weight``; llama.cpp reuses ``token_embd``).

Weights keep PyTorch's (out, in) layout as numpy arrays (the writer reverses the dimensions, as GGUF
wants). Q and K rows are permuted per head from Hugging Face's rotate-half rotary layout to GGUF's
interleaved one. Norms stay float32; matrices are written as ``f32``, ``f16`` or ``q8_0`` (a matrix
whose rows are not a multiple of 32 values falls back to f16 under ``q8_0``).

The tokenizer is carried over: a GGUF source's ``tokenizer.*`` fields as they are; a Hugging Face
folder's byte-level BPE (``tokenizer.json``) through ``gguf.vocab``. Other tokenizers (WordPiece,
SentencePiece) are refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from planner.errors import PlannerError
from profilers.atomic import atomic_path

ARCHITECTURE = "deci"
GGUF_TYPES = ("f32", "f16", "q8_0")
"""Weight types ``--gguf-type`` accepts (llama.cpp runs all three on CPU)."""
EXPRESSIBLE_FAMILIES = ("llama", "mistral")
"""Hugging Face ``model_type`` values the deci builder computes exactly (no q/k norms, no biases)."""
Q8_BLOCK = 32
ZERO_FFN_WIDTH = 1
"""FFN width written for a block that keeps heads but no neurons (zero weights: output exactly 0)."""


@dataclass(frozen=True)
class GGUFBlock:
    """One block as written: the source layer, and its head, KV-head and FFN counts in the file."""

    layer: int
    heads: int
    kv_heads: int
    ffn: int
    note: str = ""


def refusal(model: nn.Module, *, source_gguf: Path | None, tokenizer_folder: Path | None) -> str | None:
    """Why ``model`` cannot be written as a deci GGUF (one line with the fix), or None when it can.

    Checked before any work: the family, biases and q/k norms the deci graph has no place for, rotary
    scaling, and a tokenizer the writer can carry over.
    """
    config = getattr(model, "config", None)
    family = getattr(config, "model_type", None)
    if family not in EXPRESSIBLE_FAMILIES:
        return (
            f"--gguf writes Llama-family decoders (model_type {', '.join(EXPRESSIBLE_FAMILIES)}) as llama.cpp's "
            f"'deci' architecture; this model is {family!r}. Drop --gguf and use the saved folder, or --onnx."
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "--gguf: this model has attention or MLP biases, which llama.cpp's deci graph does not add; drop --gguf."
    if getattr(config, "sliding_window", None) and family == "mistral":
        return "--gguf: this Mistral model uses a sliding attention window, which the deci graph does not; drop --gguf."
    scaling = getattr(config, "rope_scaling", None) or {}
    kind = scaling.get("rope_type", scaling.get("type", "default")) if isinstance(scaling, dict) else "default"
    if kind not in (None, "default"):
        return f"--gguf: rotary scaling {kind!r} is not written by this exporter yet; drop --gguf."
    if source_gguf is None:
        if tokenizer_folder is None or not (tokenizer_folder / "tokenizer.json").is_file():
            return "--gguf needs the model's tokenizer (a GGUF source, or tokenizer.json in its folder); drop --gguf."
        if _tokenizer_model(tokenizer_folder) != "BPE":
            return (
                f"--gguf carries byte-level BPE tokenizers from a Hugging Face folder; {tokenizer_folder} has a "
                f"{_tokenizer_model(tokenizer_folder)} tokenizer. Start from a GGUF file of the model, or drop --gguf."
            )
    return None


def gguf_blocks(model: nn.Module) -> list[GGUFBlock]:
    """The blocks ``write_gguf`` writes, in order (identity layers left out), with the reason for any
    count that differs from the pruned model's."""
    from planner.models.decoder_surgery import gated_mlp_neurons, llama_groups, llama_heads

    blocks: list[GGUFBlock] = []
    for index, layer in enumerate(_layers(model)):
        heads, groups, ffn = llama_heads(layer.self_attn), llama_groups(layer.self_attn), gated_mlp_neurons(layer.mlp)
        if heads == 0 and ffn == 0:
            continue
        note = ""
        if heads == 0 and not blocks:
            heads, groups = 1, 1
            note = "first block: one head with a zero output (llama.cpp reads the head size there)"
        if heads > 0 and ffn == 0:
            ffn, note = (
                ZERO_FFN_WIDTH,
                "FFN removed: a zero FFN one neuron wide (llama.cpp drops attention without FFN)",
            )
        blocks.append(GGUFBlock(index, heads, groups, ffn, note))
    if not blocks:
        raise PlannerError("--gguf: the plan removed every block; there is nothing for llama.cpp to run.")
    return blocks


def write_gguf(
    model: nn.Module,
    path: str | Path,
    *,
    weight_type: str = "f16",
    source_gguf: Path | None = None,
    tokenizer_folder: Path | None = None,
    name: str = "pruned",
) -> list[GGUFBlock]:
    """Write ``model`` (a pruned Llama-family causal LM) to ``path``; return the blocks written.

    Args:
        weight_type: one of ``GGUF_TYPES`` for the matrices (norms are always float32).
        source_gguf: the GGUF file the dense model came from (its tokenizer fields are copied).
        tokenizer_folder: a Hugging Face folder with ``tokenizer.json`` (used without ``source_gguf``).

    Written through a temporary name and renamed at the end.
    """
    import gguf

    if weight_type not in GGUF_TYPES:
        raise PlannerError(f"--gguf-type {weight_type!r} is not one of {', '.join(GGUF_TYPES)}.")
    problem = refusal(model, source_gguf=source_gguf, tokenizer_folder=tokenizer_folder)
    if problem:
        raise PlannerError(problem)
    config: Any = model.config
    blocks = gguf_blocks(model)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    target = Path(path)
    with atomic_path(target) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCHITECTURE)
        writer.add_name(name)
        writer.add_file_type(_file_type(weight_type))
        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        writer.add_block_count(len(blocks))
        writer.add_feed_forward_length([b.ffn for b in blocks])
        writer.add_head_count([b.heads for b in blocks])
        writer.add_head_count_kv([b.kv_heads for b in blocks])
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(float(_rope_theta(config)))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_vocab_size(int(config.vocab_size))
        _add_tokenizer(writer, source_gguf=source_gguf, tokenizer_folder=tokenizer_folder, vocab=int(config.vocab_size))
        for tensor_name, array in _tensors(model, blocks, head_dim):
            _add(writer, tensor_name, array, weight_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return blocks


def source_gguf_of(spec: str) -> Path | None:
    """The GGUF file a model spec names (the bundled ``smollm2`` or a ``.gguf`` path), else None."""
    if spec == "smollm2":
        from planner.models.loading import smollm2_path

        return smollm2_path()
    return Path(spec) if spec.endswith(".gguf") else None


# ----- tensors ---------------------------------------------------------------------------------
def _layers(model: nn.Module) -> Any:
    return model.model.layers  # type: ignore[union-attr]


def _tensors(model: Any, blocks: list[GGUFBlock], head_dim: int) -> Iterator[tuple[str, np.ndarray]]:
    backbone: Any = model.model
    yield "token_embd.weight", _array(backbone.embed_tokens.weight)
    yield "output_norm.weight", _array(backbone.norm.weight)
    if not _tied(model):
        yield "output.weight", _array(model.lm_head.weight)
    hidden = int(backbone.embed_tokens.weight.shape[1])
    for number, block in enumerate(blocks):
        layer = backbone.layers[block.layer]
        prefix = f"blk.{number}"
        attention, mlp = layer.self_attn, layer.mlp
        if block.heads > 0:
            yield f"{prefix}.attn_norm.weight", _array(layer.input_layernorm.weight)
            if getattr(attention, "q_proj", None) is None:  # the zero head of an attention-free first block
                zero = np.zeros((head_dim, hidden), dtype=np.float32)
                yield f"{prefix}.attn_q.weight", zero
                yield f"{prefix}.attn_k.weight", zero
                yield f"{prefix}.attn_v.weight", zero
                yield f"{prefix}.attn_output.weight", np.zeros((hidden, head_dim), dtype=np.float32)
            else:
                yield f"{prefix}.attn_q.weight", _rotary_rows(_array(attention.q_proj.weight), block.heads)
                yield f"{prefix}.attn_k.weight", _rotary_rows(_array(attention.k_proj.weight), block.kv_heads)
                yield f"{prefix}.attn_v.weight", _array(attention.v_proj.weight)
                yield f"{prefix}.attn_output.weight", _array(attention.o_proj.weight)
        yield f"{prefix}.ffn_norm.weight", _array(layer.post_attention_layernorm.weight)
        if getattr(mlp, "gate_proj", None) is None:  # the zero FFN of a block that keeps only attention
            yield f"{prefix}.ffn_gate.weight", np.zeros((block.ffn, hidden), dtype=np.float32)
            yield f"{prefix}.ffn_up.weight", np.zeros((block.ffn, hidden), dtype=np.float32)
            yield f"{prefix}.ffn_down.weight", np.zeros((hidden, block.ffn), dtype=np.float32)
        else:
            yield f"{prefix}.ffn_gate.weight", _array(mlp.gate_proj.weight)
            yield f"{prefix}.ffn_up.weight", _array(mlp.up_proj.weight)
            yield f"{prefix}.ffn_down.weight", _array(mlp.down_proj.weight)


def _rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a (heads * d, in) Q or K matrix reordered per head from rotate-half pairs (i, i + d/2)
    to GGUF's adjacent pairs (2i, 2i + 1)."""
    rows, columns = weight.shape
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, columns).swapaxes(1, 2).reshape(rows, columns)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()


def _tied(model: Any) -> bool:
    head = getattr(model, "lm_head", None)
    embed = model.model.embed_tokens
    return head is None or head.weight.data_ptr() == embed.weight.data_ptr()


def _add(writer: Any, name: str, array: np.ndarray, weight_type: str) -> None:
    import gguf

    if array.ndim == 1 or weight_type == "f32":
        writer.add_tensor(name, array.astype(np.float32))
        return
    if weight_type == "q8_0" and array.shape[-1] % Q8_BLOCK == 0:
        kind = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
        return
    writer.add_tensor(name, array.astype(np.float16))


def _file_type(weight_type: str) -> int:
    import gguf

    kinds = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    return int(kinds[weight_type])


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        parameters = getattr(config, "rope_parameters", None) or {}
        theta = parameters.get("rope_theta", 10000.0) if isinstance(parameters, dict) else 10000.0
    return float(theta)


# ----- tokenizer -------------------------------------------------------------------------------
def _tokenizer_model(folder: Path) -> str:
    import json

    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    return str(data.get("model", {}).get("type", "unknown"))


def _add_tokenizer(writer: Any, *, source_gguf: Path | None, tokenizer_folder: Path | None, vocab: int) -> None:
    import gguf

    if source_gguf is not None:
        reader = gguf.GGUFReader(str(source_gguf))
        for key, field in reader.fields.items():
            if not key.startswith("tokenizer."):
                continue
            sub_type = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub_type)
        return
    assert tokenizer_folder is not None
    bpe = gguf.vocab.BpeVocab(tokenizer_folder)
    tokens, types = [], []
    for text, _score, kind in bpe.all_tokens():
        tokens.append(text)
        types.append(int(kind))
    if len(tokens) > vocab:
        raise PlannerError(f"--gguf: the tokenizer has {len(tokens)} tokens but the model only {vocab} embeddings.")
    for index in range(len(tokens), vocab):  # embeddings past the tokenizer (padding rows)
        tokens.append(f"[PAD{index}]".encode())
        types.append(int(gguf.TokenType.UNUSED))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.vocab.SpecialVocab(tokenizer_folder, load_merges=True, n_vocab=vocab).add_to_gguf(writer, quiet=True)
