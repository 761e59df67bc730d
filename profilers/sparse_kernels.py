"""Weight-sparsity masks and the sparse kernels timed against dense-masked weights.

- CPU: CSR weights with ``torch.sparse.mm`` (pays only at high sparsity on most CPUs).
- CUDA: semi-structured 2:4 with ``torch.sparse.to_sparse_semi_structured`` (within its shape rules).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def unstructured_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean keep-mask of ``weight``'s shape zeroing the ``sparsity`` fraction of smallest |w|."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1); got {sparsity}")
    n_zero = round(sparsity * weight.numel())
    if n_zero == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    threshold_index = torch.argsort(weight.detach().abs().flatten())[:n_zero]
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[threshold_index] = False
    return mask.view_as(weight)


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep-mask with the 2 largest |w| of every 4 consecutive input weights (last dim % 4 == 0)."""
    if weight.shape[-1] % 4 != 0:
        raise ValueError(f"2:4 sparsity needs the input dimension to be a multiple of 4; got {weight.shape[-1]}")
    groups = weight.detach().abs().reshape(-1, 4)
    top = groups.topk(2, dim=1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(1, top, True)
    return mask.reshape(weight.shape)


class CSRLinear(nn.Module):
    """``y = x W^T + b`` with W stored as CSR; x: (..., in_features) -> (..., out_features)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
            self.weight_csr = weight.detach().to_sparse_csr()
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.sparse.mm(self.weight_csr, flat.t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def __deepcopy__(self, memo: dict[int, object]) -> CSRLinear:
        # Sparse CSR tensors have no storage that deepcopy can copy.
        bias = None if self.bias is None else self.bias.detach()
        return CSRLinear(self.weight_csr.to_dense(), bias)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # Keep the CSR tensor in step with .to(device/dtype) calls on the module.
        self.weight_csr = fn(self.weight_csr)
        return super()._apply(fn, recurse)


def semi_structured_supported(shape: tuple[int, ...], dtype: torch.dtype, device: str) -> bool:
    """Whether ``to_sparse_semi_structured`` accepts a weight of this shape/dtype on this device.

    CUDA only, 2-D; minimum rows/cols and multiples (cuSPARSELt): fp16/bf16 16x16 -> use 32x64 to
    also satisfy CUTLASS, fp32 32x32, int8 32x64.
    """
    if device != "cuda" or len(shape) != 2:
        return False
    rows, cols = shape
    multiple = {torch.float16: (32, 64), torch.bfloat16: (32, 64), torch.float32: (32, 32)}.get(dtype)
    if multiple is None:
        return False
    return rows % multiple[0] == 0 and cols % multiple[1] == 0 and rows >= multiple[0] and cols >= multiple[1]


class SemiStructuredLinear(nn.Module):  # pragma: no cover - needs CUDA
    """Linear layer whose (2:4-masked) weight uses PyTorch's semi-structured sparse kernels."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        from torch.sparse import to_sparse_semi_structured

        masked = weight.detach() * two_four_mask(weight)
        self.weight = nn.Parameter(to_sparse_semi_structured(masked.contiguous()), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)
