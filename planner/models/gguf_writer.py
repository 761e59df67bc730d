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
- tied embeddings stay tied (no ``output.weight``; llama.cpp reuses ``token_embd``);
- output-projection biases (FLAP's compensation, Fisher's fitted intercepts) are ``attn_output.bias``
  and ``ffn_down.bias``, which the deci loader reads when present. The graph adds an attention bias
  only where the block runs attention, so a bias the stream gains without a block to hold it (an
  emptied attention block's, a removed layer's) joins the FFN output bias of the block before it
  (the same sum reaches the next norm); constants before the first kept block go to a zero shift
  block written first, and an attention-free first block's own bias to its zero head.

Weights keep PyTorch's (out, in) layout as numpy arrays (the writer reverses the dimensions, as GGUF
wants). Q and K rows are permuted per head from Hugging Face's rotate-half rotary layout to GGUF's
interleaved one. Norms stay float32; matrices are written as ``f32``, ``f16`` or ``q8_0`` (a matrix
whose rows are not a multiple of 32 values falls back to f16 under ``q8_0``).

The tokenizer is carried over: a GGUF source's ``tokenizer.*`` fields as they are; a Hugging Face
folder's byte-level BPE (``tokenizer.json``) through ``gguf.vocab``. Other tokenizers (WordPiece,
SentencePiece) are refused before anything is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
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
"""Hugging Face ``model_type`` values the deci builder computes exactly (no q/k norms; of the biases, only
the output projections' that pruning adds: ``stream_biases``)."""
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


FIXED_BLOCK = GGUFBlock(-1, 1, 1, ZERO_FFN_WIDTH, "fixed block")
"""A block of one head and one neuron with zero weights (adds exactly 0): where llama.cpp needs a block."""
SHIFT_BLOCK = GGUFBlock(-1, 1, 1, ZERO_FFN_WIDTH, "shift block: the biases of removed layers before the first kept one")
"""``FIXED_BLOCK``'s zero weights with an FFN output bias: a constant the stream gains before the first kept
block (written only when removed layers with biases come first)."""


def refusal(
    model: nn.Module, *, source_gguf: Path | None, tokenizer_folder: Path | None, timing_only: bool = False
) -> str | None:
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
        return (
            "--gguf: this model's config declares attention or MLP biases (Q, K, V, gate, up), which this "
            "exporter does not write; drop --gguf."
        )
    if getattr(config, "sliding_window", None) and family == "mistral":
        return "--gguf: this Mistral model uses a sliding attention window, which the deci graph does not; drop --gguf."
    scaling = getattr(config, "rope_scaling", None) or {}
    kind = scaling.get("rope_type", scaling.get("type", "default")) if isinstance(scaling, dict) else "default"
    if kind not in (None, "default"):
        return f"--gguf: rotary scaling {kind!r} is not written by this exporter yet; drop --gguf."
    if source_gguf is None and not timing_only:
        if tokenizer_folder is None or not (tokenizer_folder / "tokenizer.json").is_file():
            return "--gguf needs the model's tokenizer (a GGUF source, or tokenizer.json in its folder); drop --gguf."
        kind = _tokenizer_model(tokenizer_folder)
        if kind != "BPE":
            return (
                f"--gguf carries byte-level BPE tokenizers from a Hugging Face folder; {tokenizer_folder} has a "
                f"{kind} tokenizer. Start from a GGUF file of the model, or drop --gguf."
            )
    return None


def gguf_blocks(model: nn.Module, *, allow_empty: bool = False) -> list[GGUFBlock]:
    """The blocks ``write_gguf`` writes, in order (identity layers left out), with the reason for any
    count that differs from the pruned model's."""
    from planner.models.decoder_surgery import gated_mlp_neurons, llama_groups, llama_heads

    blocks: list[GGUFBlock] = []
    shifted = False  # a removed layer before the first kept one adds a constant (its biases)
    for index, layer in enumerate(_layers(model)):
        heads, groups, ffn = llama_heads(layer.self_attn), llama_groups(layer.self_attn), gated_mlp_neurons(layer.mlp)
        if heads == 0 and ffn == 0:
            shifted = shifted or (not blocks and any(b is not None for b in output_biases(layer)))
            continue
        if shifted and not blocks:
            blocks.append(SHIFT_BLOCK)
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
    if not blocks and shifted:
        return [SHIFT_BLOCK]
    if not blocks and allow_empty:
        return [FIXED_BLOCK]  # llama.cpp aborts on a model without blocks
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
    timing_only: bool = False,
) -> list[GGUFBlock]:
    """Write ``model`` (a pruned Llama-family causal LM) to ``path``; return the blocks written.

    Args:
        weight_type: one of ``GGUF_TYPES`` for the matrices (norms are always float32).
        source_gguf: the GGUF file the dense model came from (its tokenizer fields are copied).
        tokenizer_folder: a Hugging Face folder with ``tokenizer.json`` (used without ``source_gguf``).
        timing_only: no tokenizer (llama.cpp's "none" vocabulary: fed token ids, as timing does).

    Written through a temporary name and renamed at the end.
    """
    if weight_type not in GGUF_TYPES:
        raise PlannerError(f"--gguf-type {weight_type!r} is not one of {', '.join(GGUF_TYPES)}.")
    problem = refusal(model, source_gguf=source_gguf, tokenizer_folder=tokenizer_folder, timing_only=timing_only)
    if problem:
        raise PlannerError(problem)
    config: Any = model.config
    blocks = gguf_blocks(model, allow_empty=timing_only)
    shape = GraphShape.of(config)
    vocab = int(config.vocab_size)

    def tokenizer(writer: Any) -> None:
        if timing_only:
            _no_tokenizer(writer)
        else:
            _add_tokenizer(writer, source_gguf=source_gguf, tokenizer_folder=tokenizer_folder, vocab=vocab)

    write_graph(path, shape, blocks, _tensors(model, blocks, shape.head_dim), weight_type, tokenizer, name=name)
    return blocks


@dataclass(frozen=True)
class GraphShape:
    """The sizes every block of a deci GGUF shares (hidden width, head size, rotary base, norm eps, vocab)."""

    hidden: int
    head_dim: int
    rope_theta: float
    rms_eps: float
    context: int
    vocab: int

    @classmethod
    def of(cls, config: Any) -> GraphShape:
        heads = int(config.num_attention_heads)
        return cls(
            hidden=int(config.hidden_size),
            head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // heads),
            rope_theta=_rope_theta(config),
            rms_eps=float(config.rms_norm_eps),
            context=int(config.max_position_embeddings),
            vocab=int(config.vocab_size),
        )


def write_graph(
    path: str | Path,
    shape: GraphShape,
    blocks: Sequence[GGUFBlock],
    tensors: Iterable[tuple[str, np.ndarray]],
    weight_type: str,
    tokenizer: Callable[[Any], None],
    *,
    name: str,
) -> None:
    """Write a deci GGUF from its blocks' counts and its tensors (atomically).

    Args:
        tensors: (GGUF name, (out, in) or (n,) float32 array), in file order.
        tokenizer: adds the ``tokenizer.*`` fields to the writer.
    """
    import gguf

    with atomic_path(Path(path)) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCHITECTURE)
        writer.add_name(name)
        writer.add_file_type(_file_type(weight_type))
        writer.add_context_length(shape.context)
        writer.add_embedding_length(shape.hidden)
        writer.add_block_count(len(blocks))
        writer.add_feed_forward_length([b.ffn for b in blocks])
        writer.add_head_count([b.heads for b in blocks])
        writer.add_head_count_kv([b.kv_heads for b in blocks])
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)
        writer.add_rope_dimension_count(shape.head_dim)
        writer.add_rope_freq_base(shape.rope_theta)
        writer.add_layer_norm_rms_eps(shape.rms_eps)
        writer.add_vocab_size(shape.vocab)
        tokenizer(writer)
        for tensor_name, array in tensors:
            _add(writer, tensor_name, array, weight_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


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
    biases = stream_biases(model, blocks)
    for number, block in enumerate(blocks):
        prefix = f"blk.{number}"
        if block.layer < 0:
            yield from _fixed_block(prefix, hidden, head_dim)
        else:
            layer = backbone.layers[block.layer]
            if block.heads > 0:
                yield f"{prefix}.attn_norm.weight", _array(layer.input_layernorm.weight)
                yield from _attention(prefix, layer.self_attn, block, hidden, head_dim)
            yield f"{prefix}.ffn_norm.weight", _array(layer.post_attention_layernorm.weight)
            yield from _ffn(prefix, layer.mlp, block, hidden)
        for part in ("attn_output", "ffn_down"):
            if (number, part) in biases:
                yield f"{prefix}.{part}.bias", biases[(number, part)]


def output_biases(layer: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(attention, MLP) output-projection biases of a decoder layer, (hidden,) each; None without one
    (an emptied block keeps its bias as ``EmptyAttention.bias`` / ``EmptyMLP.bias``)."""
    from planner.models.decoder_surgery import EmptyAttention, EmptyMLP

    attention, mlp = layer.self_attn, layer.mlp
    attention_bias = attention.bias if isinstance(attention, EmptyAttention) else attention.o_proj.bias
    mlp_bias = mlp.bias if isinstance(mlp, EmptyMLP) else mlp.down_proj.bias
    return attention_bias, mlp_bias


def stream_biases(model: Any, blocks: Sequence[GGUFBlock]) -> dict[tuple[int, str], np.ndarray]:
    """(block number, "attn_output" | "ffn_down") -> the (hidden,) bias that block's projection adds.

    A layer's attention bias stays on its block where the block runs attention (real heads, or the
    first block's zero head); otherwise it, like a removed layer's biases, is a constant the stream
    gains before the next block, added to the FFN output bias of the block before (every written block
    has an FFN, ``ZERO_FFN_WIDTH`` at least). Constants before the first kept layer go to
    ``SHIFT_BLOCK``, which ``gguf_blocks`` writes first in that case.
    """
    from planner.models.decoder_surgery import llama_heads

    sums: dict[tuple[int, str], np.ndarray] = {}

    def add(number: int, part: str, bias: np.ndarray) -> None:
        key = (number, part)
        sums[key] = sums[key] + bias if key in sums else bias

    number_of = {block.layer: number for number, block in enumerate(blocks) if block.layer >= 0}
    before = 0 if blocks and blocks[0] is SHIFT_BLOCK else None  # the block a constant joins the FFN output of
    for index, layer in enumerate(_layers(model)):
        attention, mlp = (None if b is None else _array(b).astype(np.float64) for b in output_biases(layer))
        number = number_of.get(index)
        if number is None:
            shift = [c for c in (attention, mlp) if c is not None]
            if shift and before is not None:  # before is None only where there is no shift (gguf_blocks)
                add(before, "ffn_down", sum(shift[1:], shift[0]))
            continue
        if attention is not None and before is not None and llama_heads(layer.self_attn) == 0:
            add(before, "ffn_down", attention)
        elif attention is not None:
            add(number, "attn_output", attention)
        if mlp is not None:
            add(number, "ffn_down", mlp)
        before = number
    return {key: value.astype(np.float32) for key, value in sums.items()}


def _attention(
    prefix: str, attention: Any, block: GGUFBlock, hidden: int, head_dim: int
) -> Iterator[tuple[str, np.ndarray]]:
    """A block's Q, K, V and output matrices; zeros for the one head of an attention-free first block."""
    if getattr(attention, "q_proj", None) is None:
        yield from _zero_attention(prefix, hidden, head_dim)
        return
    yield f"{prefix}.attn_q.weight", _rotary_rows(_array(attention.q_proj.weight), block.heads)
    yield f"{prefix}.attn_k.weight", _rotary_rows(_array(attention.k_proj.weight), block.kv_heads)
    yield f"{prefix}.attn_v.weight", _array(attention.v_proj.weight)
    yield f"{prefix}.attn_output.weight", _array(attention.o_proj.weight)


def _ffn(prefix: str, mlp: Any, block: GGUFBlock, hidden: int) -> Iterator[tuple[str, np.ndarray]]:
    """A block's gate, up and down matrices; zeros (``block.ffn`` wide) for a removed FFN."""
    if getattr(mlp, "gate_proj", None) is None:
        yield from _zero_ffn(prefix, hidden, block.ffn)
        return
    yield f"{prefix}.ffn_gate.weight", _array(mlp.gate_proj.weight)
    yield f"{prefix}.ffn_up.weight", _array(mlp.up_proj.weight)
    yield f"{prefix}.ffn_down.weight", _array(mlp.down_proj.weight)


def _zero_attention(prefix: str, hidden: int, head_dim: int) -> Iterator[tuple[str, np.ndarray]]:
    zero = np.zeros((head_dim, hidden), dtype=np.float32)
    yield from ((f"{prefix}.attn_{n}.weight", zero) for n in ("q", "k", "v"))
    yield f"{prefix}.attn_output.weight", np.zeros((hidden, head_dim), dtype=np.float32)


def _zero_ffn(prefix: str, hidden: int, width: int) -> Iterator[tuple[str, np.ndarray]]:
    yield f"{prefix}.ffn_gate.weight", np.zeros((width, hidden), dtype=np.float32)
    yield f"{prefix}.ffn_up.weight", np.zeros((width, hidden), dtype=np.float32)
    yield f"{prefix}.ffn_down.weight", np.zeros((hidden, width), dtype=np.float32)


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


# ----- timing workloads ------------------------------------------------------------------------
UNIT_VOCAB = 256
"""Rows of the embedding and output of a unit's timing model (no tokenizer: fed token ids)."""


def write_unit_gguf(
    path: str | Path,
    shape: GraphShape,
    *,
    attention: nn.Module | None = None,
    mlp: nn.Module | None = None,
    weight_type: str = "f32",
) -> list[GGUFBlock]:
    """A timing model for one unit (a decoder's attention or MLP block, possibly pruned).

    Blocks 0 and 2 are fixed (one head and one neuron, zero weights: llama.cpp takes the head size
    from block 0, and runs the last block's FFN on the output rows only, one for a prefill); block 1
    holds the unit with the other half of the layer left out (an attention unit gets the zero FFN one
    neuron wide, an MLP unit no attention). An empty unit leaves block 1 out. The embedding
    and output have ``UNIT_VOCAB`` rows, so the fixed cost every unit model shares stays small; it is
    the same for every level, so a unit's levels differ by the unit's own cost.
    """
    from planner.models.decoder_surgery import gated_mlp_neurons, llama_groups, llama_heads

    blocks = [FIXED_BLOCK]
    if attention is not None and llama_heads(attention) > 0:
        blocks.append(GGUFBlock(0, llama_heads(attention), llama_groups(attention), ZERO_FFN_WIDTH))
    if mlp is not None and gated_mlp_neurons(mlp) > 0:
        blocks.append(GGUFBlock(0, 0, 0, gated_mlp_neurons(mlp)))
    blocks.append(FIXED_BLOCK)  # the last block's FFN sees only the output rows: keep the unit before it
    generator = np.random.default_rng(0)
    hidden, size = shape.hidden, shape.head_dim

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        yield "token_embd.weight", generator.standard_normal((UNIT_VOCAB, hidden), dtype=np.float32)
        yield "output_norm.weight", np.ones(hidden, dtype=np.float32)
        for number, block in enumerate(blocks):
            prefix = f"blk.{number}"
            if block is FIXED_BLOCK:
                yield from _fixed_block(prefix, hidden, size)
                continue
            ones = np.ones(hidden, dtype=np.float32)
            if block.heads > 0:
                yield f"{prefix}.attn_norm.weight", ones
                yield from _attention(prefix, attention, block, hidden, size)
            yield f"{prefix}.ffn_norm.weight", ones
            yield from _ffn(prefix, mlp if block.heads == 0 else None, block, hidden)

    unit_shape = dataclasses.replace(shape, vocab=UNIT_VOCAB)
    write_graph(path, unit_shape, blocks, tensors(), weight_type, _no_tokenizer, name="unit")
    return blocks


def _fixed_block(prefix: str, hidden: int, head_dim: int) -> Iterator[tuple[str, np.ndarray]]:
    """``FIXED_BLOCK``'s tensors: one head and one neuron, zero weights (the block adds exactly 0)."""
    ones = np.ones(hidden, dtype=np.float32)
    yield f"{prefix}.attn_norm.weight", ones
    yield from _zero_attention(prefix, hidden, head_dim)
    yield f"{prefix}.ffn_norm.weight", ones
    yield from _zero_ffn(prefix, hidden, ZERO_FFN_WIDTH)


def _no_tokenizer(writer: Any) -> None:
    writer.add_tokenizer_model("none")
