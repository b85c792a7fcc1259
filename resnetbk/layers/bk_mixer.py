"""The BK mixer: sequence mixing through the causal resolvent of tridiagonal systems (resnetbk/ops/bk_core.py,
resnetbk/ops/bk_response.py; the maths in docs/design.md)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.bk_core import resolvent_diagonal
from ..ops.bk_response import diagonal_and_response
from .common import Monitored

H0_DIAGONAL = -2.0  # diagonal of the discrete Laplacian H0 = tridiag(1, -2, 1)


class BKMixer(Monitored):
    """Sequence mixing through the causal resolvent of h tridiagonal systems: its diagonal g and, with values = C > 0,
    its response y to C value channels per head.

    Head k: a_i = H0_DIAGONAL + v_{i,k} with v = Linear(d, h)(x); couplings b_i = 1 (H0) or, selective,
    b_{i-1} = softplus(w_k . x_i) >= 0 (computed from position i, so g_i still sees positions <= i only);
    z_k = i, or learned x_k + i (softplus(y_k) + im_z_min). Output: Linear(2h, d) of (Re g_k, Im g_k) per head,
    plus Linear(2hC, d) of (Re y, Im y) for the values s = Linear(d, hC)(x), optionally gated by
    silu(Linear(d, 2hC)(x)) as the output gates of GLA and Mamba-2 do.
    """

    stat_prefix = "bk"
    STAT_NAMES = ("potential_mean", "potential_std", "abs_g_mean", "abs_g_max", "im_z_min")
    RESPONSE_STAT_NAMES = ("abs_y_mean", "abs_y_max")

    def __init__(self, d_model: int, n_heads: int, values: int = 0, learned_z: bool = True, im_z_min: float = 1e-3,
                 selective: bool = False, value_gate: bool = False, dropout: float = 0.0):
        super().__init__()
        h, c = n_heads, values
        self.potential = nn.Linear(d_model, h)
        self.coupling = nn.Linear(d_model, h) if selective else None
        self.im_z_min = im_z_min
        if learned_z:
            self.z_re = nn.Parameter(torch.zeros(h))
            # softplus(y) + im_z_min = 1 at init, i.e. z = i as in the faithful preset.
            self.z_im_raw = nn.Parameter(torch.full((h,), math.log(math.expm1(1.0 - im_z_min))))
        else:
            self.z_re = self.z_im_raw = None
        self.out = nn.Linear(2 * h, d_model)
        self.out.is_residual_out = True
        self.values = nn.Linear(d_model, h * c) if c else None
        self.value_out = nn.Linear(2 * h * c, d_model, bias=False) if c else None
        if c:
            self.value_out.is_residual_out = True
        self.value_gate = nn.Linear(d_model, 2 * h * c) if value_gate else None
        self.dropout = nn.Dropout(dropout)
        self.init_stats(self.STAT_NAMES + (self.RESPONSE_STAT_NAMES if c else ()))

    def spectral_shift(self) -> torch.Tensor:
        if self.z_re is None:
            return torch.ones(self.potential.out_features, dtype=torch.float32,
                              device=self.potential.weight.device) * 1j
        return torch.complex(self.z_re.float(), F.softplus(self.z_im_raw.float()) + self.im_z_min)

    def forward(self, x: torch.Tensor, cache: Optional[dict] = None) -> torch.Tensor:
        """x (B, N, d) -> (B, N, d). cache (inference): {} to start one, filled with the recurrences' last state (g and
        y of the last position, complex); or a filled one, which x's positions continue (in place)."""
        if cache:
            return self._step(x, cache)
        # At least float32 before adding H0: a bf16 sum near -2 would round the potential to steps of 2^-6.
        v = self.potential(x)
        a = (v.to(torch.promote_types(v.dtype, torch.float32)) + H0_DIAGONAL).transpose(1, 2)  # (B, h, N)
        b = 1.0
        if self.coupling is not None:
            b = F.softplus(self.coupling(x[:, 1:]).to(a.dtype)).transpose(1, 2)  # (B, h, N-1), float32 or float64
        z = self.spectral_shift()
        if self.values is None:
            g, y = resolvent_diagonal(a, b, z, causal=True), None  # (B, h, N) complex
        else:
            batch, n, heads = a.shape[0], a.shape[2], a.shape[1]
            s = self.values(x).view(batch, n, heads, -1).transpose(1, 2)  # (B, h, N, C), a view
            # y: (B, h, N, C, 2) real pairs in x's dtype; on a GPU written in (B, N, h, C, 2) order. A prefill keeps
            # them in float32 (or float64) for the state; rounding to x's dtype afterwards gives the same features.
            g, y = diagonal_and_response(a, b, z, s, a.dtype if cache is not None else x.dtype)
        if cache is not None:
            cache.update(g=g[:, :, -1], y=None if y is None else torch.view_as_complex(y[:, :, -1].contiguous()))
        if self.record_stats:
            with torch.no_grad():
                v, abs_g = v.detach().float(), g.detach().abs()
                stats = [v.mean(), v.std(), abs_g.mean(), abs_g.max(), z.imag.detach().min()]
                if y is not None:
                    abs_y = torch.linalg.vector_norm(y.detach().float(), dim=-1)
                    stats += [abs_y.mean(), abs_y.max()]
                self.store_stats(stats)
        # (B, N, 2h) as (Re g, Im g) per head. a is a view of a (B, N, h) tensor and the Triton kernels
        # write g in a's memory order, so on GPU this is a view, not a copy; the same holds for y.
        features = torch.view_as_real(g.transpose(1, 2)).flatten(2).to(x.dtype)
        response = None if y is None else y.transpose(1, 2).flatten(2).to(x.dtype)  # (B, N, 2hC)
        return self._read_out(x, features, response)

    def _read_out(self, x, features, response):
        out = self.out(features)
        if response is not None:
            if self.value_gate is not None:
                response = response * F.silu(self.value_gate(x))
            out = out + self.value_out(response)
        return self.dropout(out)

    def _step(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """The recurrences advanced over x's positions one at a time from the cached state (O(1) memory per token):
        g_i = 1 / (a_i - z - b_{i-1}^2 g_{i-1}), y_i = g_i (s_i - b_{i-1} y_{i-1}), b_{i-1} from position i."""
        v = self.potential(x)
        a = v.to(torch.promote_types(v.dtype, torch.float32)) + H0_DIAGONAL  # (B, N, h)
        b = F.softplus(self.coupling(x).to(a.dtype)) if self.coupling is not None else torch.ones_like(a)
        z = self.spectral_shift().to(torch.complex128 if a.dtype == torch.float64 else torch.complex64)
        s = self.values(x).view(*a.shape, -1).to(a.dtype) if self.values is not None else None
        g, y = cache["g"], cache["y"]
        gs, ys = [], []
        for i in range(x.shape[1]):
            g = torch.reciprocal(a[:, i] - z - b[:, i] ** 2 * g)
            gs.append(g)
            if s is not None:
                y = g[..., None] * (s[:, i] - b[:, i, :, None] * y)
                ys.append(y)
        cache.update(g=g, y=y)
        features = torch.view_as_real(torch.stack(gs, 1)).flatten(2).to(x.dtype)
        response = None if s is None else torch.view_as_real(torch.stack(ys, 1)).flatten(2).to(x.dtype)
        return self._read_out(x, features, response)
