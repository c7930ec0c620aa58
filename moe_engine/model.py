"""A decoder-only Mixture-of-Experts transformer (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE).

Module and parameter names follow the Hugging Face ones (minus the ``model.`` prefix) so the loader
and the saver are a thin renaming; experts are stacked per layer into ``experts.gate_up_proj``
[E, 2I, H] (gate rows first) and ``experts.down_proj`` [E, H, I], the layout ``kernels`` expects.
Dense SwiGLU MLPs (shared expert, ``mlp_only_layers``) also keep a fused ``gate_up_proj``.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import kernels

from .config import ModelArgs

if TYPE_CHECKING:
    from .generate import ClassifyOutput, GenerateOutput

Prompts = str | Sequence[str] | Sequence[Sequence[int]]
log = logging.getLogger(__name__)

# Above this many (row, expert slot) pairs per decode step the compiled step's gathered experts
# (one reduction per pair) lose to the eager step's sorted per-expert matmuls: one MoE layer with
# 64 experts, hidden 256, takes 6.0 vs 6.2 ms at 512 pairs and 10.3 vs 7.3 ms at 1024
# (benchmarks/cpu_moe_layer.py); at 512 the whole compiled step is still 1.4x faster.
COMPILED_DECODE_MAX_PAIRS = 512
DECODE_RECOMPILE_LIMIT = 64


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # normalise in fp32, cast back, then scale: the order transformers uses (matters in bf16)
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear, except for a single row on CPU inside torch.compile (batch-1 decode).

    There the multiply-and-sum, which inductor fuses into one reduction, streams the weight at
    close to memory bandwidth; MKL's matrix-vector product reaches about a third of it on our
    CPUs (docs/benchmarks.md § engine).
    """
    if torch.compiler.is_compiling() and x.device.type == "cpu" and x.numel() == x.shape[-1]:
        y = (x.reshape(1, -1) * weight).sum(-1).reshape(*x.shape[:-1], -1)
        return y if bias is None else y + bias
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class MLP(nn.Module):
    """SwiGLU with one fused gate_up matmul."""

    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(2 * inter, hidden))
        self.down_proj = nn.Parameter(torch.empty(hidden, inter))

    def forward(self, x: Tensor) -> Tensor:
        gate, up = linear(x, self.gate_up_proj).chunk(2, dim=-1)
        return linear(F.silu(gate) * up, self.down_proj)


class Experts(nn.Module):
    def __init__(self, n: int, hidden: int, inter: int):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(n, 2 * inter, hidden))
        self.down_proj = nn.Parameter(torch.empty(n, hidden, inter))


class MoE(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.top_k, self.renormalize = args.top_k, args.norm_topk_prob
        self.gate = Linear(args.hidden_size, args.num_experts, bias=False)
        self.experts = Experts(args.num_experts, args.hidden_size, args.moe_intermediate_size)
        self.shared_expert = self.shared_expert_gate = None
        if args.shared_expert_intermediate_size:
            self.shared_expert = MLP(args.hidden_size, args.shared_expert_intermediate_size)
            self.shared_expert_gate = Linear(args.hidden_size, 1, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [N, H] -> (out [N, H], router logits [N, E], expert ids int32 [N, k])."""
        logits = self.gate(x)
        weights, ids = kernels.topk_gating(logits, self.top_k, self.renormalize)
        shared = None
        if self.shared_expert is not None:
            shared = kernels.SharedExpert(
                self.shared_expert.gate_up_proj, self.shared_expert.down_proj, self.shared_expert_gate.weight
            )
        out = kernels.fused_moe(
            x, self.experts.gate_up_proj, self.experts.down_proj, weights, ids, shared_expert=shared
        )
        return out, logits, ids


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.clip = args.clip_qkv
        h, q_out, kv_out = args.hidden_size, args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim
        self.q_proj = Linear(h, q_out, bias=args.qkv_bias)
        self.k_proj = Linear(h, kv_out, bias=args.qkv_bias)
        self.v_proj = Linear(h, kv_out, bias=args.qkv_bias)
        self.o_proj = Linear(q_out, h, bias=args.o_bias)
        self.qk_norm = args.qk_norm
        if args.qk_norm == "head":  # Qwen3: per head
            self.q_norm = RMSNorm(args.head_dim, args.rms_norm_eps)
            self.k_norm = RMSNorm(args.head_dim, args.rms_norm_eps)
        elif args.qk_norm == "full":  # OLMoE: over the whole projection
            self.q_norm = RMSNorm(q_out, args.rms_norm_eps)
            self.k_norm = RMSNorm(kv_out, args.rms_norm_eps)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, cache: tuple[Tensor, Tensor] | None,
        pos: Tensor, kv_len: int,
    ) -> Tensor:
        B, T, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        if self.clip is not None:
            q, k, v = (t.clamp(-self.clip, self.clip) for t in (q, k, v))
        q = q.view(B, T, self.n_heads, self.head_dim)
        k = k.view(B, T, self.n_kv, self.head_dim)
        v = v.view(B, T, self.n_kv, self.head_dim)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = q.transpose(1, 2)
        if cache is None:
            k, v = k.transpose(1, 2), v.transpose(1, 2)
        else:
            # each row writes at its own positions, so prompts of any length share one batch
            kc, vc = cache
            rows = torch.arange(B, device=x.device)[:, None]
            kc[rows, :, pos] = k
            vc[rows, :, pos] = v
            k, v = kc[:, :, :kv_len], vc[:, :, :kv_len]
        if T == 1 and x.device.type == "cpu" and torch.compiler.is_compiling():
            y = decode_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_kv != self.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


def decode_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """SDPA for one query per row, written out: q [B, heads, 1, D], k/v [B, kv_heads, S, D].

    For the compiled CPU decode step: inductor fuses this into its kernels, where CPU flash
    attention is an opaque call costing ~0.4 ms per layer at 16 rows (docs/benchmarks.md § engine).
    Heads sharing a K/V head (GQA) are laid side by side instead of repeating K and V.
    """
    B, heads, _, D = q.shape
    n_kv = k.shape[1]
    s = (q.reshape(B, n_kv, heads // n_kv, D) @ k.transpose(-1, -2)).float() * D**-0.5
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1).to(v.dtype)
    return (p @ v).reshape(B, heads, 1, D)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, T, heads, D]; cos/sin [B, T, D] (transformers' rotate-half convention)."""
    return x * cos[:, :, None] + rotate_half(x) * sin[:, :, None]


class Block(nn.Module):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__()
        self.self_attn = Attention(args)
        self.is_moe = args.sparse_layers[layer]
        self.mlp = MoE(args) if self.is_moe else MLP(args.hidden_size, args.intermediate_size)
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)


@dataclass
class RunOutput:
    hidden: Tensor  # final-normed hidden states [B, T, H]
    router_logits: list[Tensor]  # per MoE layer [B*T, E]
    expert_ids: list[Tensor]  # per MoE layer int32 [B*T, k]


class KVCache:
    """Preallocated per-layer K/V [batch, kv_heads, max_len, head_dim]; slots are positions."""

    def __init__(self, args: ModelArgs, batch: int, max_len: int, device: torch.device, dtype: torch.dtype):
        shape = (batch, args.n_kv_heads, max_len, args.head_dim)
        self.batch, self.max_len = batch, max_len
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(args.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(args.n_layers)]

    def rows(self, rows: slice) -> list[tuple[Tensor, Tensor]]:
        return [(k[rows], v[rows]) for k, v in zip(self.k, self.v, strict=True)]

    def move_row(self, src: int, dst: int) -> None:
        for t in (*self.k, *self.v):
            t[dst].copy_(t[src])


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = nn.ModuleList(Block(args, i) for i in range(args.n_layers))
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.lm_head = self.score = None
        if args.task == "cls":
            self.score = Linear(args.hidden_size, args.num_labels, bias=False)
        elif args.tie_word_embeddings:
            self.lm_head = Linear(args.hidden_size, args.vocab_size, bias=False)
            self.lm_head.weight = self.embed_tokens.weight
        else:
            self.lm_head = Linear(args.hidden_size, args.vocab_size, bias=False)
        self.tokenizer = None  # set by the loader when the checkpoint ships one
        self.telemetry = None  # moe_engine.telemetry.RoutingStats, set by the loader
        self._inv_freq: dict[torch.device, Tensor] = {}
        self._compiled_decode: Any = None

    @property
    def config(self) -> ModelArgs:
        return self.args

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def head(self) -> Linear:
        return self.lm_head if self.lm_head is not None else self.score

    # -- core -------------------------------------------------------------------------------------
    def rope(self, pos: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        inv = self._inv_freq.get(pos.device)
        if inv is None:
            d = self.args.head_dim
            inv = 1.0 / (self.args.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float, device=pos.device) / d))
            self._inv_freq[pos.device] = inv
        freqs = pos[..., None].float() * inv
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def _mask(self, q_pos: Tensor, k_pos: Tensor, k_valid: Tensor | None) -> Tensor:
        """Boolean [B, 1, T, S]: key visible iff its position <= the query's (and inside the window)."""
        m = k_pos[:, None, :] <= q_pos[:, :, None]
        if self.args.sliding_window is not None:
            m &= (q_pos[:, :, None] - k_pos[:, None, :]) < self.args.sliding_window
        if k_valid is not None:
            m &= k_valid[:, None, :]
            # padding queries would see nothing (NaN); let them see themselves, their output is unused
            m |= torch.eye(q_pos.shape[1], dtype=torch.bool, device=m.device)
        return m[:, None]

    def positions(self, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Rotary positions [B, T] and attention mask [B, 1, T, T] for a cache-free forward."""
        B, T = input_ids.shape
        if attention_mask is None:
            pos = torch.arange(T, device=input_ids.device).expand(B, T)
            return pos, self._mask(pos, pos, None)
        valid = attention_mask.to(device=input_ids.device, dtype=torch.bool)
        pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
        mask = self._mask(pos, pos, valid)
        idx = torch.arange(T, device=input_ids.device)
        mask &= (idx[None, :] <= idx[:, None])[None, None]  # token order, not positions, for padding
        return pos, mask

    def run(
        self, input_ids: Tensor, pos: Tensor, *, mask: Tensor, cache: list[tuple[Tensor, Tensor]] | None = None,
        kv_len: int = 0,
    ) -> RunOutput:
        """Embed -> blocks -> final norm. ``pos`` [B, T] rotary positions (and cache slots)."""
        B, T = input_ids.shape
        x = self.embed_tokens(input_ids)
        cos, sin = self.rope(pos, x.dtype)
        router_logits, expert_ids = [], []
        for i, layer in enumerate(self.layers):
            h = layer.input_layernorm(x)
            x = x + layer.self_attn(h, cos, sin, mask, None if cache is None else cache[i], pos, kv_len)
            h = layer.post_attention_layernorm(x).reshape(B * T, -1)
            if layer.is_moe:
                y, logits, ids = layer.mlp(h)
                router_logits.append(logits)
                expert_ids.append(ids)
            else:
                y = layer.mlp(h)
            x = x + y.view(B, T, -1)
        return RunOutput(self.norm(x), router_logits, expert_ids)

    def decode_logits(
        self, toks: Tensor, pos: Tensor, mask: Tensor, cache: list[tuple[Tensor, Tensor]], kv_len: int,
    ) -> tuple[Tensor, list[Tensor]]:
        """One decode step, toks/pos [n, 1] -> (fp32 next-token logits [n, vocab], expert ids per MoE layer)."""
        out = self.run(toks, pos, mask=mask, cache=cache, kv_len=kv_len)
        return self.head()(out.hidden[:, 0]).float(), out.expert_ids

    def compile_decode(self) -> Transformer:
        """Compile the decode step with torch.compile (CPU only), as gpt-fast does.

        The first steps pay the compilation (~15 s per graph on 2 cores, a few seconds from
        inductor's on-disk cache); batch 1 and larger batches are two graphs, the cache length is
        symbolic. Prefill stays eager. Not measured on CUDA, where the Triton kernels carry the hot
        path, so it is refused there.
        """
        if self.device.type != "cpu":
            raise ValueError(f"compile_decode is for CPU models; this one is on {self.device}")
        self._compiled_decode = torch.compile(self.decode_logits, dynamic=True, fullgraph=True)
        return self

    def decode(
        self, toks: Tensor, pos: Tensor, mask: Tensor, cache: list[tuple[Tensor, Tensor]], kv_len: int,
    ) -> tuple[Tensor, list[Tensor]]:
        """``decode_logits``, through the compiled step when ``compile_decode`` enabled it."""
        fn = self._compiled_decode
        if fn is not None and toks.shape[0] * max(self.args.top_k, 1) <= COMPILED_DECODE_MAX_PAIRS:
            # dynamo keeps graphs per code object, so all models share decode_logits' budget of
            # recompiles (8 by default), and each needs a few (batch 1 vs more, sizes that happened
            # to be equal at first sight); its config is per thread, and the serving engine decodes
            # in a thread of its own
            if torch._dynamo.config.recompile_limit < DECODE_RECOMPILE_LIMIT:
                torch._dynamo.config.recompile_limit = DECODE_RECOMPILE_LIMIT
            # dynamic=True would also make the norms' eps and OLMoE's clip symbolic floats, which
            # inductor cannot lower: dynamo then traces and compiles the whole step a second time
            torch._dynamo.config.specialize_float = True
            try:
                return fn(toks, pos, mask, cache, kv_len)
            except Exception as e:  # no C++ compiler, an inductor bug: stay correct, run eagerly
                if isinstance(e, (ValueError, TypeError, IndexError)):
                    raise
                log.warning("compiled decode failed (%s: %s); decoding eagerly from now on", type(e).__name__, e)
                self._compiled_decode = None
        return self.decode_logits(toks, pos, mask, cache, kv_len)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *, return_hidden: bool = False,
        return_router_logits: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Causal forward without a cache (differentiable): [B, T] -> logits [B, T, vocab].

        For a classification checkpoint the per-token ``score`` logits [B, T, num_labels] come back
        (use ``classify_logits`` for pooled ones). ``attention_mask`` (1 = token, 0 = padding, left or
        right) keeps padding out of attention and out of the rotary positions. ``return_hidden`` gives
        the final-normed hidden states instead; ``return_router_logits`` also returns a list with
        one [B*T, E] tensor per MoE layer (for the load-balancing loss).
        """
        pos, mask = self.positions(input_ids, attention_mask)
        out = self.run(input_ids, pos, mask=mask)
        y = out.hidden if return_hidden else self.head()(out.hidden)
        return (y, out.router_logits) if return_router_logits else y

    def pool(self, hidden: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """[B, T, H] -> [B, H] per ``classifier_pooling``: last real token (as transformers) or mean."""
        B, T = input_ids.shape
        if attention_mask is None:
            pad = self.args.pad_token_id
            attention_mask = torch.ones_like(input_ids) if pad is None else (input_ids != pad).long()
        m = attention_mask.to(hidden.device)
        if self.args.classifier_pooling == "mean":
            w = m.to(hidden.dtype)[..., None]
            return (hidden * w).sum(1) / w.sum(1).clamp(min=1)
        # rightmost non-padding token, exactly GenericForSequenceClassification's rule
        last = (torch.arange(T, device=hidden.device) * m).argmax(-1)
        return hidden[torch.arange(B, device=hidden.device), last]

    def classify_logits(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *, return_router_logits: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Pooled sequence-classification logits [B, num_labels] (differentiable)."""
        if self.score is None:
            raise ValueError("classify_logits needs a *ForSequenceClassification checkpoint (no `score` head)")
        hidden, rl = self.forward(input_ids, attention_mask, return_hidden=True, return_router_logits=True)
        logits = self.score(self.pool(hidden, input_ids, attention_mask))
        return (logits, rl) if return_router_logits else logits

    # -- inference API (see generate.py) ----------------------------------------------------------
    def generate(self, prompts: Prompts, max_new_tokens: int = 64, **kw: Any) -> GenerateOutput:
        """Batched generation with a KV cache; keyword arguments as ``moe_engine.generate.generate``."""
        from .generate import generate

        return generate(self, prompts, max_new_tokens=max_new_tokens, **kw)

    def classify(self, prompts: Prompts, **kw: Any) -> ClassifyOutput:
        """Pooled sequence classification; see ``moe_engine.generate.classify``."""
        from .generate import classify

        return classify(self, prompts, **kw)


def init_weights(model: Transformer, std: float = 0.02, seed: int | None = None) -> Transformer:
    """Random init like transformers' _init_weights: normal(0, std) weights, zero biases, unit norms.

    Drawn in place on the parameters' device, so big random models never pass through host memory.
    """
    g = None
    if seed is not None:
        g = torch.Generator(device=model.device)
        g.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=g)
    return model
