"""Recurrent layers written with plain operations, so that ``vmap`` can batch them."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _UnrolledRNN(nn.Module):
    """``nn.RNN``/``nn.LSTM``/``nn.GRU``'s forward as a loop over time of plain tensor operations.

    Same parameter names, same equations as PyTorch's documentation; used only inside the batched
    model (on the meta device), since ``aten::gru`` and its kin have no batching rule.
    Packed sequences, unbatched inputs, ``proj_size`` and dropout between layers raise
    ``NotImplementedError`` (the members then train one by one).
    """

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.mode = rnn.mode  # "RNN_TANH", "RNN_RELU", "LSTM", "GRU"
        self.num_layers, self.bidirectional = rnn.num_layers, rnn.bidirectional
        self.batch_first, self.bias, self.dropout = rnn.batch_first, rnn.bias, rnn.dropout
        self.proj_size = getattr(rnn, "proj_size", 0)
        for name, param in rnn.named_parameters(recurse=False):
            self.register_parameter(name, nn.Parameter(param.detach(), param.requires_grad))

    def forward(self, x: torch.Tensor, hx: Any = None) -> tuple[torch.Tensor, Any]:
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise NotImplementedError("only batched (3-d) tensor inputs are unrolled")
        if self.proj_size or (self.dropout and self.training and self.num_layers > 1):
            raise NotImplementedError("proj_size and inter-layer dropout are not unrolled")
        lstm = self.mode == "LSTM"
        seq = x.transpose(0, 1) if self.batch_first else x  # (T, B, F)
        directions = 2 if self.bidirectional else 1
        size = self._tensor("weight_hh_l0").shape[-1]
        h0: torch.Tensor
        c0: torch.Tensor | None
        if hx is None:
            zeros = seq.new_zeros(self.num_layers * directions, seq.shape[1], size)
            h0, c0 = zeros, zeros
        else:
            h0, c0 = hx if lstm else (hx, None)
        last_h: list[torch.Tensor] = []
        last_c: list[torch.Tensor] = []  # an LSTM's cell states; empty for the others
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                w_ih = self._tensor("weight_ih" + suffix)
                w_hh = self._tensor("weight_hh" + suffix)
                b_ih = self._tensor("bias_ih" + suffix) if self.bias else None
                b_hh = self._tensor("bias_hh" + suffix) if self.bias else None
                inputs = seq.flip(0) if direction else seq
                projected = F.linear(inputs, w_ih, b_ih)  # every time step at once
                h = h0[layer * directions + direction]
                c = c0[layer * directions + direction] if lstm and c0 is not None else None
                states = []
                for t in range(projected.shape[0]):
                    h, c = self._cell(projected[t], F.linear(h, w_hh, b_hh), h, c)
                    states.append(h)
                out = torch.stack(states)
                outputs.append(out.flip(0) if direction else out)
                last_h.append(h)
                if c is not None:
                    last_c.append(c)
            seq = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
        output = seq.transpose(0, 1) if self.batch_first else seq
        h_n = torch.stack(last_h)
        return output, ((h_n, torch.stack(last_c)) if lstm else h_n)

    def _tensor(self, name: str) -> torch.Tensor:
        # Plain getattr, not get_parameter: under functional_call the parameters are swapped for
        # plain (batched) tensors, which get_parameter refuses.
        return getattr(self, name)

    def _cell(
        self, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.mode == "GRU":
            i_r, i_z, i_n = gi.chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            return (1 - z) * n + z * h, None
        if self.mode == "LSTM":
            assert c is not None  # an LSTM always carries its cell state
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        if self.mode == "RNN_RELU":
            return torch.relu(gi + gh), None
        return torch.tanh(gi + gh), None


def _unroll_rnns(model: nn.Module) -> None:
    """Swap PyTorch's own RNN/LSTM/GRU modules (not subclasses) for :class:`_UnrolledRNN`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.RNNBase) and type(child) in (nn.RNN, nn.LSTM, nn.GRU):
                setattr(parent, name, _UnrolledRNN(child))
