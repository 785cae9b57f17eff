#!/usr/bin/env python3
"""PyTorch eager baseline for scripts/bench-gpu: the same Llama shapes (SmolLM2-135M and a
random 1B-class model), bf16 weights, a contiguous KV cache, SDPA attention with GQA, greedy
sampling on the device. Prints the same table as engine/examples/bench_gpu.rs.

Usage: bench_gpu_torch.py [--prompt 128] [--gen 64] [--streams 1,16,64,256]
"""
import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = {
    "SmolLM2-135M": dict(layers=30, hidden=576, inter=1536, heads=9, kv=3, vocab=49152),
    "random 1B Llama": dict(layers=16, hidden=2048, inter=8192, heads=32, kv=8, vocab=128256),
}


class Llama:
    def __init__(self, layers, hidden, inter, heads, kv, vocab, dev="cuda"):
        g = torch.Generator(device=dev).manual_seed(0)
        r = lambda *s: (torch.rand(*s, device=dev, generator=g, dtype=torch.float32) * 0.04 - 0.02).to(torch.bfloat16)
        self.h, self.nh, self.nkv, self.hd = hidden, heads, kv, hidden // heads
        self.emb = r(vocab, hidden)
        self.layers = []
        for _ in range(layers):
            self.layers.append(dict(
                qkv=r((heads + 2 * kv) * self.hd, hidden), o=r(hidden, hidden),
                gu=r(2 * inter, hidden), down=r(hidden, inter),
                n1=torch.ones(hidden, device=dev, dtype=torch.bfloat16),
                n2=torch.ones(hidden, device=dev, dtype=torch.bfloat16)))
        self.norm = torch.ones(hidden, device=dev, dtype=torch.bfloat16)
        self.inter = inter
        inv = 1.0 / (10000 ** (torch.arange(0, self.hd, 2, device=dev).float() / self.hd))
        self.inv = inv

    def rope(self, x, pos):  # x [B, H, T, hd], pos [T]
        f = pos[:, None].float() * self.inv[None, :]
        c, s = f.cos().to(x.dtype), f.sin().to(x.dtype)
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2:]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)

    def forward(self, tok, cache, start):  # tok [B, T]
        B, T = tok.shape
        x = self.emb[tok]
        pos = torch.arange(start, start + T, device=tok.device)
        for li, L in enumerate(self.layers):
            h = F.rms_norm(x, (self.h,), L["n1"], 1e-5)
            qkv = F.linear(h, L["qkv"])
            q, k, v = qkv.split([self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd], -1)
            q = self.rope(q.view(B, T, self.nh, self.hd).transpose(1, 2), pos)
            k = self.rope(k.view(B, T, self.nkv, self.hd).transpose(1, 2), pos)
            v = v.view(B, T, self.nkv, self.hd).transpose(1, 2)
            kc, vc = cache[li]
            kc[:, :, start:start + T] = k
            vc[:, :, start:start + T] = v
            a = F.scaled_dot_product_attention(q, kc[:, :, :start + T], vc[:, :, :start + T],
                                               is_causal=(T > 1), enable_gqa=True)
            x = x + F.linear(a.transpose(1, 2).reshape(B, T, -1), L["o"])
            h = F.rms_norm(x, (self.h,), L["n2"], 1e-5)
            gu = F.linear(h, L["gu"])
            x = x + F.linear(F.silu(gu[..., : self.inter]) * gu[..., self.inter:], L["down"])
        x = F.rms_norm(x[:, -1], (self.h,), self.norm, 1e-5)
        return F.linear(x, self.emb).argmax(-1)

    def cache(self, B, T):
        return [(torch.empty(B, self.nkv, T, self.hd, device="cuda", dtype=torch.bfloat16),
                 torch.empty(B, self.nkv, T, self.hd, device="cuda", dtype=torch.bfloat16))
                for _ in self.layers]


@torch.inference_mode()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--streams", default="1,16,64,256")
    a = ap.parse_args()
    streams = [int(s) for s in a.streams.split(",")]
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    for name, shape in SHAPES.items():
        m = Llama(**shape)
        print(f"\n## PyTorch eager: {name}")
        for B, T in [(1, 512), (8, 512)]:
            tok = torch.randint(0, shape["vocab"], (B, T), device="cuda")
            c = m.cache(B, T)
            m.forward(tok, c, 0)
            torch.cuda.synchronize()
            s = time.perf_counter()
            m.forward(tok, c, 0)
            torch.cuda.synchronize()
            print(f"prefill {B}×{T}: {B * T / (time.perf_counter() - s):>9.0f} tok/s")
        print("| streams | decode tok/s (aggregate) | ms per step |")
        print("|---|---|---|")
        for B in streams:
            c = m.cache(B, a.prompt + a.gen + 8)
            tok = torch.randint(0, shape["vocab"], (B, a.prompt), device="cuda")
            nxt = m.forward(tok, c, 0)[:, None]
            for i in range(3):  # warm-up steps
                nxt = m.forward(nxt, c, a.prompt + i)[:, None]
            torch.cuda.synchronize()
            s = time.perf_counter()
            for i in range(a.gen):
                nxt = m.forward(nxt, c, a.prompt + 3 + i)[:, None]
            torch.cuda.synchronize()
            dt = time.perf_counter() - s
            print(f"| {B} | {B * a.gen / dt:.0f} | {1e3 * dt / a.gen:.3f} |")
        del m
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
